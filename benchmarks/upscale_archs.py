"""``srkd upscale`` speed per architecture at x4 on a 512x512 input, against fp32 eager torch.

    SRKD_DATA=../shared/data python benchmarks/upscale_archs.py [--repeats 3] [--json out.json]

For each efficient architecture (one x4 preset per family; the 43 M-parameter EDSR and 15 M RCAN
are left out: one run takes minutes here), with the same weights and the same real crop, in one
process, taking turns so that background load hits both alike:

  (a) fp32 eager: ``model(x)`` on the whole image under no_grad (the anchors' way);
  (b) srkd: ``srkd.upscale`` defaults (precision auto, tile auto, channels_last, srkd.infer.fusion).

It prints output megapixels per second (best warm run of ``--repeats``), the ratio (b)/(a), the
precision srkd chose, and the largest difference between the two outputs in 8-bit levels. Weights
are the official ones where this machine has them (bundled CARN-M, $SRKD_DATA's NTIRE files);
otherwise the preset is randomly initialised (speed does not depend on the values).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

PRESETS = ["edsr-baseline-x4", "carn-x4", "carn-m-x4", "imdn-ntire-x4", "rfdn-ntire-x4", "rlfn-ntire-x4", "span-x4",
           "span-ch28-x4", "swinir-light-x4"]


def _model(preset: str, weights_dir: Path | None):
    import torch

    from precision_table import sources

    found = sources(weights_dir)
    if preset in found:
        return found[preset], "official"
    from srkd.models import build_from_spec

    torch.manual_seed(0)
    return build_from_spec(preset).eval(), "random init"


def main() -> None:
    import numpy as np
    import torch

    from upscale_speed import _anchor_fn, _input, _srkd_fn

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--weights-dir", type=Path, help="folder with official zoo files (by their zoo file names)")
    parser.add_argument("--only", nargs="*", help="presets to measure (default: all of PRESETS)")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", os.cpu_count() or 1)))
    img = _input(args.size)
    rows = []
    print(f"| preset | weights | fp32 eager MP/s | srkd MP/s | ratio | srkd precision | max diff (levels) |")
    print("|---|---|---|---|---|---|---|")
    for preset in args.only or PRESETS:
        net, weights = _model(preset, args.weights_dir)
        anchor, fast = _anchor_fn(net, "cpu"), _srkd_fn(net, "cpu")
        ref, out = anchor(img), fast(img)  # cold calls (tracing, checks) are not timed
        best = {"anchor": float("inf"), "srkd": float("inf")}
        for _ in range(args.repeats):
            for name, fn in (("anchor", anchor), ("srkd", fast)):
                t0 = time.perf_counter()
                fn(img)
                best[name] = min(best[name], time.perf_counter() - t0)
        mp = out.shape[0] * out.shape[1] / 1e6
        diff = int(np.abs(ref.astype(np.int16) - out.astype(np.int16)).max())
        row = {"preset": preset, "weights": weights, "anchor_mp_s": mp / best["anchor"], "srkd_mp_s": mp / best["srkd"],
               "ratio": best["anchor"] / best["srkd"], "precision": fast.upscaler.precision, "max_diff_levels": diff}
        rows.append(row)
        print(f"| {preset} | {weights} | {row['anchor_mp_s']:.2f} | {row['srkd_mp_s']:.2f} | {row['ratio']:.2f}x | "
              f"{row['precision']} | {diff} |", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
