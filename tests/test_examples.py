"""examples/: each script runs on tiny settings and does what its docstring says."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
SET5_LR = ROOT / "srkd" / "assets" / "benchmarks" / "Set5" / "LR_bicubic" / "X4"


def run(script: str, *args: str, cwd: Path) -> str:
    env = {**os.environ, "SRKD_BACKEND": "torch", "TORCH_NUM_THREADS": "2", "OMP_NUM_THREADS": "2"}
    env.pop("SRKD_DATA", None)  # the bundled data: what a newcomer without the shared data gets
    res = subprocess.run([sys.executable, str(EXAMPLES / script), *args], cwd=cwd, env=env, capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return res.stdout


def test_distill_and_evaluate(tmp_path):
    out = run("distill_and_evaluate.py", "--method", "kd", "--steps", "3", "--out", str(tmp_path / "run"), cwd=tmp_path)
    assert (tmp_path / "run" / "model.safetensors").is_file()
    assert "x the teacher's parameters" in out and "Set5:" in out and " dB / 0." in out


def test_upscale_folder(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    from PIL import Image

    for name in ("babyx4.png", "birdx4.png"):
        Image.open(SET5_LR / name).crop((0, 0, 24, 20)).save(src / name)
    out = run("upscale_folder.py", str(src), str(tmp_path / "out"), cwd=tmp_path)
    got = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert got == ["babyx4_x4.png", "birdx4_x4.png"] and "MP/s" in out and "(16, 16, 3) -> (64, 64, 3)" in out
    assert np.asarray(Image.open(tmp_path / "out" / "babyx4_x4.png")).shape == (80, 96, 3)


def test_train_teacher_from_the_yaml_config(tmp_path):
    out = run("train_teacher.py", "--steps", "2", "--warmup", "0", "--out", str(tmp_path / "teacher"), "--val", "none", cwd=tmp_path)
    assert "2/2 steps" in out and (tmp_path / "teacher" / "model.safetensors").is_file()
    from srkd.io.checkpoint import load_model_file

    mf = load_model_file(tmp_path / "teacher" / "model.safetensors")
    assert mf.model.arch == "edsr" and mf.model.scale == 4  # the config's network, the command line's steps


def test_compress_and_compare(tmp_path):
    out = run("compress_and_compare.py", "-o", str(tmp_path / "s.safetensors"), cwd=tmp_path)
    assert (tmp_path / "s.safetensors").is_file() and "x fewer" in out and "Set5:" in out.replace("set5", "Set5")


@pytest.mark.parametrize("config", sorted((EXAMPLES / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_example_configs_are_valid(config):
    from srkd.train import config as C

    C.from_dict(C.load_yaml(config))
