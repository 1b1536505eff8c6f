"""Every user error of `srkd eval` / `srkd convert`: one line, non-zero exit, no traceback, no partial file."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import run_cli
from srkd.io.checkpoint import save_model
from srkd.models import build_from_spec


def _one_line_error(code, out, err, *needles):
    assert code != 0
    assert "Traceback" not in err and "Traceback" not in out
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in err, err


@pytest.fixture
def tiny_model(tmp_path):
    return save_model(build_from_spec("carn-m:n_feats=8,scale=2"), tmp_path / "tiny-x2.safetensors")


def _hr_folder(path, n=2, size=(24, 20)):
    path.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path / f"im{i}.png")
    return path


def test_unknown_model_name(tmp_path):
    code, out, err = run_cli("eval", "edsr-x9", "--json", str(tmp_path / "r.json"))
    _one_line_error(code, out, err, "unknown model 'edsr-x9'")
    assert not (tmp_path / "r.json").exists()


def test_missing_file(tmp_path):
    _one_line_error(*run_cli("eval", str(tmp_path / "nope.safetensors")), "not found")


def test_corrupt_and_truncated_safetensors(tmp_path, tiny_model):
    data = tiny_model.read_bytes()
    (tmp_path / "trunc.safetensors").write_bytes(data[:-100])
    (tmp_path / "corrupt.safetensors").write_bytes(b"{" + data[1:])
    for name in ("trunc", "corrupt"):
        _one_line_error(*run_cli("eval", str(tmp_path / f"{name}.safetensors")), "corrupt or truncated")


def test_checkpoint_of_another_scale(tiny_model):
    _one_line_error(*run_cli("eval", str(tiny_model), "--scale", "4"), "x2 model", "x4")


def test_missing_dataset(tmp_path, tiny_model):
    code, out, err = run_cli("eval", str(tiny_model), "--dataset", "urban100", "--data-root", str(tmp_path / "empty"))
    _one_line_error(code, out, err, "srkd data download urban100")


def test_unknown_dataset(tiny_model):
    _one_line_error(*run_cli("eval", str(tiny_model), "--dataset", "set6"), "set6")


def test_non_image_and_unreadable_image_in_dataset(tmp_path, tiny_model):
    hr = _hr_folder(tmp_path / "hr")
    (hr / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    _one_line_error(*run_cli("eval", str(tiny_model), "--hr", str(hr), "--json", str(tmp_path / "r.json")), "broken.png")
    assert not (tmp_path / "r.json").exists()
    (hr / "broken.png").unlink()
    (hr / "fake.jpg").write_text("this is not a jpeg")
    _one_line_error(*run_cli("eval", str(tiny_model), "--hr", str(hr)), "fake.jpg")
    (hr / "fake.jpg").unlink()
    (hr / "notes.bin").write_bytes(b"hello")
    _one_line_error(*run_cli("eval", str(tiny_model), "--hr", str(hr)), "notes.bin is not an image")


def test_existing_output_needs_overwrite(tmp_path, tiny_model):
    hr = _hr_folder(tmp_path / "hr")
    (tmp_path / "r.json").write_text("keep me")
    _one_line_error(*run_cli("eval", str(tiny_model), "--hr", str(hr), "--json", str(tmp_path / "r.json")), "--overwrite")
    assert (tmp_path / "r.json").read_text() == "keep me"
    code, out, err = run_cli("eval", str(tiny_model), "--hr", str(hr), "--json", str(tmp_path / "r.json"), "--overwrite")
    assert code == 0, err
    assert '"psnr"' in (tmp_path / "r.json").read_text()


def test_bad_option_values(tiny_model):
    _one_line_error(*run_cli("eval", str(tiny_model), "--metric", "lab"), "metric")


def test_subprocess_error_has_no_traceback(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    proc = subprocess.run([sys.executable, "-m", "srkd", "eval", str(tmp_path / "missing.safetensors")],
                          capture_output=True, text=True, env=env, timeout=120)
    _one_line_error(proc.returncode, proc.stdout, proc.stderr, "not found")
