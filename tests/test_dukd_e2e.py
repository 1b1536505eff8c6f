"""``srkd distill --method dukd`` end to end on real images with a small teacher, the warm start
of a x4 student from the x2 result, and the student loading in ``srkd eval``."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import torch

from conftest import data_path, run_cli
from srkd.io.checkpoint import load_model_file, save_model
from srkd.models import build_from_spec


def _teacher(path, scale):
    torch.manual_seed(scale)
    save_model(build_from_spec(f"edsr:n_resblocks=2,n_feats=16,scale={scale}"), path)
    return str(path)


def _distill(tmp_path, name, teacher, *extra):
    run = tmp_path / name
    code, out, err = run_cli(
        "distill", "--method", "dukd", "--teacher", teacher, "--student", "edsr:n_resblocks=1,n_feats=8",
        "--data", str(data_path("benchmarks", "Set5", "HR")), "--steps", "2", "--batch", "2", "--patch", "12",
        "--val", "none", "--precision", "fp32", "--threads", "1", "--out", str(run), "--quiet", *extra)
    assert code == 0, err
    return run


def test_dukd_end_to_end_then_x4_from_x2_and_eval(tmp_path):
    run2 = _distill(tmp_path, "x2", _teacher(tmp_path / "t2.safetensors", 2))
    records = [json.loads(line) for line in (run2 / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in records if r.get("step") == 2 and "loss" in r][-1]
    for term in ("rec", "kd", "zoom_in", "zoom_out_rec", "zoom_out_kd"):
        assert math.isfinite(last[term]) and last[term] > 0, term
    mf = load_model_file(run2 / "model.safetensors")
    method = mf.provenance["method"]
    assert method["method"] == "dukd" and method["recipe"] == "edsr" and method["params"]["n_gt_sub"] == 2

    run4 = _distill(tmp_path, "x4", _teacher(tmp_path / "t4.safetensors", 4), "--init", str(run2 / "model.safetensors"))
    mf4 = load_model_file(run4 / "model.safetensors")
    assert mf4.model.scale == 4
    skipped = mf4.provenance["method"]["teacher"]["student_init_skipped"]
    assert sorted(skipped) == sorted(k for k in mf4.model.state_dict() if k.startswith("tail."))

    report = tmp_path / "eval.json"
    code, out, err = run_cli("eval", str(run4 / "model.safetensors"), "-d", "set5",
                             "--data-root", str(data_path()), "--json", str(report))
    assert code == 0, err
    text = report.read_text()
    assert "set5" in text.lower() and "psnr" in text.lower()


def test_bad_dukd_option_is_one_line_without_traceback(tmp_path):
    teacher = _teacher(tmp_path / "t2.safetensors", 2)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "srkd", "distill", "--method", "dukd", "--teacher", teacher,
                           "--set", "lc_revert=backwards", "--steps", "1", "--out", str(tmp_path / "run")],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "lc_revert" in lines[0] and "exact" in lines[0]
