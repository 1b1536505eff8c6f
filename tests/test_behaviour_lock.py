"""Behaviour lock: short deterministic runs whose results were recorded before the code was
reorganised (issue 17) and must not move.

The final weights of a `srkd teacher-train` run, of `srkd distill --method kd` and `--method dukd`
runs, and a tiled `srkd upscale` output are hashed (the tensors and the pixels, not the files,
whose metadata carries times and commits). fp32, one thread, fixed seeds. Float results depend on
the kernels oneDNN picks for the CPU (an AMX Xeon and an AVX-512 EPYC give different fp32 sums,
both "AVX512" to torch), so each platform keeps its own record, taken by running the
pre-refactor commit 0068a3a there; on a platform with no record the test skips and says why.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_cli

from srkd.provenance import cpu_info

ASSETS = Path(__file__).resolve().parent.parent / "srkd" / "assets"
BUNDLED = ASSETS / "train" / "T91"
STUDENT = "edsr:n_resblocks=2,n_feats=8,res_scale=1"
COMMON = ["--steps", "4", "--batch", "2", "--patch", "12", "--val", "none", "--threads", "1",
          "--precision", "fp32", "--seed", "3", "--quiet"]


def platform() -> tuple[str, str, str]:
    """torch version, ATen CPU capability, and the CPU vendor plus "+amx" where AMX tiles exist."""
    info = cpu_info()
    amx = "+amx" if "amx_tile" in info.get("flags", "").split() else ""
    return torch.__version__, torch.backends.cpu.get_cpu_capability(), info.get("vendor_id", "unknown") + amx


# Each record: the code at commit 0068a3a (before issue 17's refactor) run on that platform.
RECORDS = {
    # AMD EPYC (Zen 4), recorded twice, identical.
    ("2.13.0+cpu", "AVX512", "AuthenticAMD"): {
        "teacher-train": "cddf94507a5ae4fc9603ffa883ec146b4f5cf7eb55e514087b8d59ae500ed5d9",
        "distill-kd": "2aeff594fb791e7816d905194249a2561b448b39711b0913bef79cab4c7aa3a0",
        "distill-dukd": "d96cb5a89b6c5cc632f8b28fd523664563dbfa84b70a9940a713335ff5e15347",
        "upscale-tiled": "2fbb30cc81567dcbeb289045a3a4946d3282d06269b816f8d74b0189250991d8",
    },
    # Intel Xeon with AMX (the CI machine of stop 26), recorded from a worktree of 0068a3a.
    ("2.13.0+cpu", "AVX512", "GenuineIntel+amx"): {
        "teacher-train": "225c2b0cf244564a2b100998d5c79396809f1b610ce31c01b6aeebfd5181cae5",
        "distill-kd": "cfcd1d8ae13e16518b93170eccf7c528a91f91de2b0e3694915b90ebbc3b245d",
        "distill-dukd": "c97fb2e19d20e7023b2a624102cc66a2803f582553b82121874fa42f82409e10",
        "upscale-tiled": "13d17dfc059b1f86bbc45fd7d68abb3f6f4909a725e44cab247c757e0cd847b5",
    },
}
HERE = platform()
RECORDED = RECORDS.get(HERE, {})


def weights_sha(path: Path) -> str:
    from safetensors.torch import load_file

    state = load_file(str(path))
    h = hashlib.sha256()
    for key in sorted(state):
        h.update(key.encode())
        h.update(state[key].contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def pixels_sha(path: Path) -> str:
    from srkd.io.images import read_image

    img = read_image(path)
    return hashlib.sha256(np.ascontiguousarray(img).tobytes()).hexdigest()


@pytest.fixture(scope="module")
def lock(tmp_path_factory):
    if HERE not in RECORDS:
        known = "; ".join(" / ".join(key) for key in RECORDS)
        pytest.skip(f"no locked hashes for {' / '.join(HERE)} (recorded: {known})")
    root = tmp_path_factory.mktemp("lock")
    data = root / "data"
    data.mkdir()
    for name in ("t46.png", "tt1.png", "tt8.png"):
        shutil.copy(BUNDLED / name, data / name)
    return root, data


def _teacher(root: Path, data: Path) -> Path:
    out = root / "teacher"
    if not (out / "model.safetensors").exists():
        code, _, err = run_cli("teacher-train", "--arch", "edsr:n_resblocks=2,n_feats=16,res_scale=1", "--scale", "2",
                               "--data", str(data), "--out", str(out), *COMMON)
        assert code == 0, err
    return out / "model.safetensors"


def test_teacher_train_is_unchanged(lock):
    root, data = lock
    got = weights_sha(_teacher(root, data))
    assert got == RECORDED["teacher-train"], f"teacher-train weights changed: now {got}"


@pytest.mark.parametrize("method", ["kd", "dukd"])
def test_distill_is_unchanged(lock, method):
    root, data = lock
    teacher = _teacher(root, data)
    out = root / f"distill-{method}"
    code, _, err = run_cli("distill", "--method", method, "--teacher", str(teacher), "--student", STUDENT,
                           "--data", str(data), "--out", str(out), *COMMON)
    assert code == 0, err
    got = weights_sha(out / "model.safetensors")
    assert got == RECORDED[f"distill-{method}"], f"distill {method} weights changed: now {got}"


def test_tiled_upscale_is_unchanged(lock, tmp_path):
    src = ASSETS / "benchmarks" / "Set5" / "LR_bicubic" / "X4" / "butterflyx4.png"
    out = tmp_path / "o.png"
    code, _, err = run_cli("upscale", str(src), "-o", str(out), "--precision", "fp32", "--tile", "24",
                           "--backend", "torch", "--device", "cpu", "--quiet")
    assert code == 0, err
    got = pixels_sha(out)
    assert got == RECORDED["upscale-tiled"], f"tiled upscale output changed: now {got}"
