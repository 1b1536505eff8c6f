"""Evaluation speed: the bundled CARN-M x4 on Urban100, fp32 vs fp32+channels_last vs bf16+channels_last.

All configurations run in one process, on the same images, taking turns image by image so that
background load hits them equally. Prints seconds per configuration, the speed-up against plain
fp32 and the mean Y-PSNR difference against plain fp32.

    SRKD_DATA=../shared/data python benchmarks/eval_speed.py [--limit 20] [--threads 2]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from srkd.evaluate import open_dataset, sr_image
from srkd.infer import Upscaler
from srkd.io.hub import load_model
from srkd.metrics import psnr

CONFIGS = {
    "fp32": dict(precision="fp32", channels_last=False),
    "fp32+channels_last": dict(precision="fp32", channels_last=True),
    "bf16+channels_last": dict(precision="bf16", channels_last=True),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default=None, help="model reference (default: bundled CARN-M)")
    ap.add_argument("--scale", type=int, default=4)
    ap.add_argument("--dataset", default="urban100")
    ap.add_argument("--limit", type=int, default=0, help="only the first N images (0: all)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    model = load_model(args.model, scale=args.scale).model
    ups = {name: Upscaler(model, device="cpu", tile=None, **cfg) for name, cfg in CONFIGS.items()}
    seconds = {name: 0.0 for name in CONFIGS}
    scores = {name: [] for name in CONFIGS}
    bench = open_dataset(args.dataset, args.scale)
    for i, sample in enumerate(bench):
        if args.limit and i >= args.limit:
            break
        for name, up in ups.items():
            start = time.perf_counter()
            sr = sr_image(up, sample.lr)
            seconds[name] += time.perf_counter() - start
            scores[name].append(psnr(sr, sample.hr, args.scale))
    n = len(scores["fp32"])
    ref_t, ref_p = seconds["fp32"], float(np.mean(scores["fp32"]))
    print(f"{args.dataset} x{args.scale}, {n} images, {args.threads} threads, model {args.model or 'bundled CARN-M'}")
    print(f"{'configuration':22s} {'seconds':>9s} {'speed-up':>9s} {'Y-PSNR':>8s} {'dPSNR':>8s} {'max |dPSNR| per image':>22s}")
    for name in CONFIGS:
        p = float(np.mean(scores[name]))
        worst = max(abs(a - b) for a, b in zip(scores[name], scores["fp32"]))
        print(f"{name:22s} {seconds[name]:9.1f} {ref_t / seconds[name]:8.2f}x {p:8.3f} {p - ref_p:+8.4f} {worst:22.4f}")


if __name__ == "__main__":
    main()
