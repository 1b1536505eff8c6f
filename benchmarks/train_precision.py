"""Accuracy cost of bf16 training: the same short run in fp32 and in bf16 (srkd's default on CPU).

    SRKD_DATA=/path/to/shared/data python benchmarks/train_precision.py [--steps 300] [--json out.json]

Same seed, data (T91 + BSD200), batches and schedule; only the autocast precision differs.
Reported: the final training loss (mean of the last 50 steps), Set5 x4 Y-PSNR of the EMA model
(evaluated in fp32), and seconds per step. ``--no-fp32-image-convs`` adds a bf16 run in which the
convolutions touching the 3-channel image also run in bf16, to show why srkd keeps them in fp32.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from srkd.train import config as C  # noqa: E402
from srkd.train import engine  # noqa: E402
from srkd.train.runs import read_metrics  # noqa: E402


def run(precision: str, steps: int, arch: str, sources: list[str], image_fp32: bool = True) -> dict:
    original = engine.image_convs_fp32
    if not image_fp32:
        engine.image_convs_fp32 = lambda model, enabled: original(model, False)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            cfg = C.from_dict({
                "model": {"arch": arch, "scale": 4}, "data": {"sources": sources},
                "optim": {"lr": 2e-4}, "schedule": {"kind": "cosine"},
                "train": {"steps": steps, "precision": precision}, "val": {"sets": ["set5"], "every": steps},
                "run": {"out": str(Path(tmp) / "run"), "ckpt_every": steps},
            })
            result = engine.train(cfg, progress=False)
            recs = [r for r in read_metrics(Path(cfg.run.out) / "metrics.jsonl") if "loss" in r]
    finally:
        engine.image_convs_fp32 = original
    return {"precision": precision, "image_convs_fp32": image_fp32, "final_loss": float(np.mean([r["loss"] for r in recs[-50:]])),
            "set5_psnr": result.val["set5"]["psnr"], "set5_ssim": result.val["set5"]["ssim"],
            "seconds_per_step": 1 / result.steps_per_second}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--arch", default="edsr:n_resblocks=8,n_feats=32")
    ap.add_argument("--no-fp32-image-convs", action="store_true")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    root = Path(os.environ.get("SRKD_DATA", ""))
    sources = [str(root / "train" / "T91"), str(root / "train" / "BSD200")]
    if not Path(sources[0]).is_dir():
        sys.exit("set SRKD_DATA to the shared data folder")
    rows = [run("fp32", args.steps, args.arch, sources), run("bf16", args.steps, args.arch, sources)]
    if args.no_fp32_image_convs:
        rows.append(run("bf16", args.steps, args.arch, sources, image_fp32=False))
    print(f"{args.arch} x4, {args.steps} steps, batch 16, LR patch 48, T91+BSD200, Set5 x4 (Y) of the EMA model")
    for r in rows:
        label = r["precision"] + ("" if r["image_convs_fp32"] or r["precision"] == "fp32" else " (image convs bf16)")
        print(f"  {label:26s} loss {r['final_loss']:.5f}  Set5 {r['set5_psnr']:.3f} dB / {r['set5_ssim']:.4f}  "
              f"{r['seconds_per_step']:.3f} s/step")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
