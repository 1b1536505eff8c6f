"""Bicubic-upscaling PSNR/SSIM on the benchmarks: a check of the whole evaluation pipeline.

    SRKD_DATA=/path/to/data python benchmarks/bicubic_baseline.py              # set5 set14 b100 urban100
    python benchmarks/bicubic_baseline.py --datasets set5 --scales 4 --data-root DIR

LR (official files, or MATLAB bicubic of the modcropped HR) -> MATLAB bicubic x s on uint8 (rounded
per pass, as MATLAB does) -> srkd's metrics (Y, shave = s). The table in docs/protocol.md was made
with this script; compare with the "Bicubic" rows of published SR tables.
"""

from __future__ import annotations

import argparse
import time

import torch

from srkd.evaluate import evaluate_bicubic


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", nargs="+", default=["set5", "set14", "b100", "urban100"])
    ap.add_argument("--scales", nargs="+", type=int, default=[2, 3, 4])
    ap.add_argument("--data-root", default=None, help="default: $SRKD_DATA, else the user cache")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    for name in args.datasets:
        for s in args.scales:
            (r,) = evaluate_bicubic([name], s, args.data_root)
            print(f"{name} x{s}: {r.psnr:.2f} / {r.ssim:.4f}  ({r.n_images} images, {r.seconds:.1f} s)", flush=True)

if __name__ == "__main__":
    main()
