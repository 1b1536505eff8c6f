"""How much a bf16 frozen encoder moves CSD's contrastive loss, on real images.

    python benchmarks/encoder_precision.py                      # bundled Set5, random VGG-19 (seed 0)
    python benchmarks/encoder_precision.py --vgg-weights vgg19.safetensors --crops 16

Real SR images: the teacher is the bundled demo EDSR-baseline x4, the "student" the bundled
official CARN-M x4, the negatives bicubic upsamplings of the other crops (CSD's). The contrastive
ratio (csd.contrastive_loss) and its relu1_1 positive distance d_pos are computed with the VGG-19
in three precisions:

* fp32 (the reference);
* bf16 autocast with every convolution in bf16 (CSD before this change);
* bf16 autocast with the image-reading convolution in fp32 (srkd.precision.image_convs_fp32, now CSD's).

ImageNet VGG-19 weights cannot be fetched on an offline machine; without --vgg-weights the
network is seeded random (srkd.distill.vgg.load_vgg19("random")), which keeps the rounding
argument (the first layer sees the image) but not ImageNet's feature scales.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from srkd.precision import image_convs_fp32
from srkd.distill.csd import bicubic_up, contrastive_loss
from srkd.distill.vgg import load_vgg19, prepare_input
from srkd.evaluate import open_dataset
from srkd.io.checkpoint import load_model_file

ASSETS = Path(__file__).resolve().parents[1] / "srkd" / "assets"


def crops(n: int, side: int, data_root) -> torch.Tensor:
    out = []
    for sample in open_dataset("set5", 4, data_root):
        h, w = sample.lr.shape[:2]
        for y in range(0, h - side + 1, side):
            for x in range(0, w - side + 1, side):
                out.append(sample.lr[y:y + side, x:x + side])
    rng = np.random.default_rng(0)
    pick = rng.choice(len(out), size=min(n, len(out)), replace=False)
    return torch.from_numpy(np.stack([out[i] for i in pick]).astype(np.float32) / 255).permute(0, 3, 1, 2).contiguous()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--crops", type=int, default=8, help="LR crops in the batch (negatives are the others)")
    ap.add_argument("--side", type=int, default=24, help="LR crop side (HR side = 4x)")
    ap.add_argument("--vgg-weights", default="random")
    ap.add_argument("--vgg-input", default="imagenet", choices=("imagenet", "raw255"))
    ap.add_argument("--data-root", default=None)
    args = ap.parse_args()
    torch.set_num_threads(2)
    lr = crops(args.crops, args.side, args.data_root)
    teacher = load_model_file(ASSETS / "demo-teacher-edsr-baseline-x4.safetensors").model.eval()
    student = load_model_file(ASSETS / "carn-m.safetensors", scale=4).model.eval()
    with torch.no_grad():
        sr_t, sr_s = teacher(lr).clamp(0, 1), student(lr).clamp(0, 1)
        neg = bicubic_up(lr, 4).clamp(0, 1)
    vgg = load_vgg19(args.vgg_weights)
    b = lr.shape[0]
    index = torch.stack([torch.tensor([j for j in range(b) if j != i]) for i in range(b)])  # every other crop
    weights = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0)

    def run(mode: str) -> tuple[float, float]:
        amp = mode != "fp32"
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp), \
                image_convs_fp32(vgg, amp and mode == "bf16 + fp32 image conv"):
            fs = vgg(prepare_input(sr_s, args.vgg_input))
            ft = vgg(prepare_input(sr_t, args.vgg_input))
            fn = vgg(prepare_input(neg, args.vgg_input))
        loss = float(contrastive_loss(fs, ft, fn, index, weights))
        d_pos = float((fs[0].float() - ft[0].float()).abs().mean())
        return loss, d_pos

    ref_loss, ref_d = run("fp32")
    print(f"{b} Set5 LR crops of {args.side}px (x4), VGG-19 {vgg.source}, input {args.vgg_input}; "
          f"teacher demo EDSR-baseline, student CARN-M")
    print("| VGG precision | contrastive ratio | rel. diff | relu1_1 d_pos | rel. diff |\n|---|---|---|---|---|")
    for mode in ("fp32", "bf16 (all convs)", "bf16 + fp32 image conv"):
        loss, d = run(mode)
        print(f"| {mode} | {loss:.6f} | {abs(loss - ref_loss) / ref_loss:.2e} | {d:.6f} | {abs(d - ref_d) / ref_d:.2e} |")


if __name__ == "__main__":
    main()
