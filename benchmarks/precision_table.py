"""fp32 vs bf16 Set5 PSNR for every architecture and preset with weights available here.

    python benchmarks/precision_table.py                         # bundled + $SRKD_DATA weights
    python benchmarks/precision_table.py --weights-dir DIR       # plus zoo files found in DIR

Each model is evaluated under the benchmark protocol (Y channel, shave = scale) twice with the
same Upscaler, ``precision="fp32"`` and ``precision="bf16"`` (explicit: no automatic fallback),
and the change in Set5 PSNR is printed with the largest pixel difference. The figures go into each
architecture's spec (``ArchSpec.bf16_delta_db``): a loss above ``srkd.models.spec.BF16_LIMIT_DB``
(0.05 dB) makes ``--precision auto`` choose fp32 for that model. Presets whose weights are not on
this machine are listed as not measured.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch

from srkd.evaluate import evaluate
from srkd.io.checkpoint import load_model_file
from srkd.io.convert import convert_state_dict, read_state_dict
from srkd.io.zoo import ZOO
from srkd.models import PRESETS

ASSETS = Path(__file__).resolve().parents[1] / "srkd" / "assets"
#: $SRKD_DATA/weights/NTIRE_ESR names that differ from the zoo's (MANIFEST.md)
ALIASES = {"rlfn-ntire-x4": "rlfn_ntire2024_baseline.pth"}


def sources(weights_dir: Path | None) -> dict[str, object]:
    """preset -> model, for every preset whose weights are on this machine."""
    out: dict[str, object] = {}
    for s in (2, 3, 4):
        mf = load_model_file(ASSETS / "carn-m.safetensors")
        mf.model.set_scale(s)
        out[f"carn-m-x{s}"] = mf.model
    out["edsr-baseline-x4 (srkd demo teacher)"] = load_model_file(ASSETS / "demo-teacher-edsr-baseline-x4.safetensors").model
    dirs = [d for d in (weights_dir, Path(os.environ.get("SRKD_DATA", "/nonexistent")) / "weights" / "NTIRE_ESR") if d]
    for preset, entry in ZOO.items():
        for d in dirs:
            for path in (d / entry.filename, d / ALIASES.get(preset, entry.filename)):
                if path.is_file() and preset not in out and not entry.bundled:
                    out[preset] = convert_state_dict(read_state_dict(path), scale=entry.scale)[0]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--weights-dir", type=Path, help="folder with official zoo files (by their zoo file names)")
    parser.add_argument("--json", type=Path, help="write the rows as JSON")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    rows = []
    print(f"{'preset':38s} {'fp32 dB':>8s} {'bf16 dB':>8s} {'change':>8s}")
    for name, model in sources(args.weights_dir).items():
        fp32 = evaluate(model, ["set5"], precision="fp32", progress=False)[0].psnr
        bf16 = evaluate(model, ["set5"], precision="bf16", progress=False)[0].psnr
        rows.append({"preset": name, "arch": model.arch, "fp32": round(fp32, 4), "bf16": round(bf16, 4),
                     "delta_db": round(bf16 - fp32, 4)})
        print(f"{name:38s} {fp32:8.3f} {bf16:8.3f} {bf16 - fp32:+8.3f}", flush=True)
    measured = {r["preset"].split(" ")[0] for r in rows}
    missing = [p for p in PRESETS if p not in measured]
    print(f"not measured (no weights on this machine): {', '.join(missing)}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
