"""Tiled vs whole-image inference on Urban100: how far apart are they, in 8-bit levels?

For every image: the LR input is the MATLAB-bicubic x4 downscale of the Urban100 HR image
(srkd.data.resize); the output of ``Upscaler(model)`` with the given tile size (default pad:
the traced receptive radius) is compared with ``Upscaler(model, tile=None)`` after rounding to
8 bits. Reported: the largest difference, the share of differing pixels, the largest float
difference before rounding.

Models: the bundled CARN-M with its official weights at default precision, and small random
configurations of every standard architecture (random weights: structure is what tiling must
respect; trained weights of EDSR/RCAN cannot be downloaded in CI).

    SRKD_DATA=/work/shared/data python benchmarks/upscale_tiling.py [--images 100] [--tiles auto 50]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SMALL = {
    "edsr (r4 f32, random)": "edsr:n_resblocks=4,n_feats=32,res_scale=0.1,scale=4",
    "edsr-baseline (r16 f16, random)": "edsr:n_resblocks=16,n_feats=16,res_scale=1.0,scale=4",
    "rcan (g3 b4 f32, random)": "rcan:n_resgroups=3,n_resblocks=4,n_feats=32,reduction=8,scale=4",
    "carn (f32, random)": "carn:n_feats=32,scale=4",
}


def main() -> None:
    import numpy as np
    import torch

    from srkd.data.resize import downscale_uint8
    from srkd.infer import Upscaler, plan_tiles
    from srkd.io.hub import load_model
    from srkd.io.images import read_rgb_uint8
    from srkd.models.registry import build_from_spec

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=100, help="first N Urban100 images for the bundled model")
    ap.add_argument("--small-images", type=int, default=5, help="first N images for the random small models")
    ap.add_argument("--tiles", nargs="+", default=["auto", "50"])
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = os.environ.get("SRKD_DATA")
    if not data:
        raise SystemExit("set SRKD_DATA to the folder holding benchmarks/Urban100")
    paths = sorted((Path(data) / "benchmarks" / "Urban100" / "HR").glob("*.png"))
    lrs = {}

    def lr(path):
        if path not in lrs:
            lrs[path] = downscale_uint8(read_rgb_uint8(path), 4)
        return lrs[path]

    def to_t(img):
        return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).unsqueeze(0).float() / 255

    models = {"carn-m (official weights)": (load_model(None).model, paths[: args.images])}
    for name, spec in SMALL.items():
        torch.manual_seed(0)
        models[name] = (build_from_spec(spec).eval(), paths[: args.small_images])

    print("| model | precision | tile | pad | images | max diff (levels) | differing px | max float diff (levels) |")
    print("|---|---|---|---|---|---|---|---|")
    for name, (net, imgs) in models.items():
        whole = Upscaler(net, tile=None)
        refs = {}
        for tile in args.tiles:
            up = Upscaler(net, tile=tile)
            worst_q = worst_f = 0.0
            differing = total = 0
            start = time.perf_counter()
            tiled = 0
            for p in imgs:
                x = to_t(lr(p))
                if p not in refs:
                    refs[p] = whole.process(x)
                ref = refs[p]
                out = up.process(x)
                tiled += len(plan_tiles(*x.shape[-2:], up.tile, up.tile_pad)) > 1
                q = (out * 255).round() - (ref * 255).round()
                worst_q = max(worst_q, float(q.abs().max()))
                worst_f = max(worst_f, float((out - ref).abs().max()) * 255)
                differing += int((q != 0).any(1).sum())
                total += q.shape[-1] * q.shape[-2]
            used = up.tile if tile != "auto" else f"auto ({tiled} of {len(imgs)} images tiled)"
            print(f"| {name} | {up.precision} | {used} | {up.tile_pad} | {len(imgs)} | {worst_q:.0f} | "
                  f"{differing / total:.2e} | {worst_f:.3f} |" + ("" if tiled else " (no image was tiled)"), flush=True)
            del start


if __name__ == "__main__":
    main()
