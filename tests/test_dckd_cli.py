"""``srkd distill --method dckd`` end to end on real images (three bundled T91 photographs) with a
small teacher and the small random VQGAN encoder: plain DCKD and DCKD* (label consistency, plus
DUKD upcycling); without VQGAN weights it stops with one line before writing anything."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import run_cli

from srkd.io.checkpoint import load_model_file, save_model
from srkd.models import build_from_spec

BUNDLED = Path(__file__).resolve().parent.parent / "srkd" / "assets" / "train" / "T91"
STUDENT = "edsr:n_resblocks=2,n_feats=8,res_scale=1"
# history updated after every step (intervals 1, unscaled) so that the run exercises it
FAST = ["--steps", "4", "--batch", "2", "--patch", "12", "--val", "set5", "--threads", "1", "--ckpt-every", "2",
        "--set", "vqgan=random-small", "--set", "history_steps=1,1,1", "--set", "history_reference=0"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("dckd")
    torch.manual_seed(0)
    teacher = root / "teacher.safetensors"
    save_model(build_from_spec("edsr:n_resblocks=3,n_feats=16,res_scale=1,scale=2"), teacher)
    data = root / "data"
    data.mkdir()
    for name in ("t46.png", "tt1.png", "tt8.png"):
        shutil.copy(BUNDLED / name, data / name)
    return root, teacher, data


def distill(root, teacher, data, out_name, *extra):
    out = root / out_name
    code, stdout, stderr = run_cli("distill", "--method", "dckd", "--teacher", str(teacher), "--student", STUDENT,
                                   "--data", str(data), "--out", str(out), *FAST, *extra)
    return code, stdout, stderr, out


def records(out: Path) -> list[dict]:
    return [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "loss" in r]


@pytest.mark.parametrize("variant", ["dckd", "dckd*"])
def test_dckd_end_to_end(setup, variant):
    root, teacher, data = setup
    extra = ["--set", "lcr=true", "--set", "upcycle=true", "--set", "label_consistency=true"] if variant == "dckd*" else []
    code, stdout, stderr, out = distill(root, teacher, data, f"run-{variant.strip('*')}{len(extra)}", *extra)
    assert code == 0, stderr
    recs = records(out)
    assert [r["step"] for r in recs] == [1, 2, 3, 4]
    want = {"rec", "kd", "dcl", "ce"} | ({"lcr", "zoom_in", "zoom_out_rec", "zoom_out_kd"} if extra else set())
    assert want <= set(recs[0])
    assert all(r["dcl"] > 0 and r["ce"] > 0 for r in recs)
    assert [r["history_updates"] for r in recs] == [1, 2, 3, 4]
    mf = load_model_file(out / "model.safetensors")
    assert mf.model.arch == "edsr" and mf.model.scale == 2
    # only the student is exported: no history model or VQGAN tensors
    assert set(mf.model.state_dict()) == set(build_from_spec(STUDENT + ",scale=2").state_dict())
    prov = mf.provenance["method"]
    assert prov["method"] == "dckd" and prov["vqgan"]["source"] == "random-small"
    assert prov["params"]["lcr"] is bool(extra)
    # the checkpoint carries the history model for an exact resume
    ckpts = sorted(out.rglob("step_*.pt"))
    state = torch.load(ckpts[-1], map_location="cpu", weights_only=True)
    assert state["extra"]["history_updates"] == 4 and "history" in state["extra"] and "rng" in state["extra"]
    assert not any(k.startswith("encoder.") for k in state["extra"]["history"])


def test_resume_after_interruption_is_exact(setup, monkeypatch):
    """SIGTERM after step 2, then the same command finishes: the history model and the negatives'
    random stream come back from the checkpoint, so the student equals an uninterrupted run's."""
    root, teacher, data = setup
    args = ["--set", "history_steps=2,2,2", "--quiet"]
    code, _, stderr, straight = distill(root, teacher, data, "resume-straight", *args)
    assert code == 0, stderr

    from srkd.distill.dckd import DCKD

    original = DCKD.on_step_end

    def stop_at_2(self, step):
        original(self, step)
        if step == 1:
            signal.raise_signal(signal.SIGTERM)

    monkeypatch.setattr(DCKD, "on_step_end", stop_at_2)
    code, _, stderr, broken = distill(root, teacher, data, "resume-broken", *args)
    assert code == 143, stderr
    monkeypatch.undo()
    code, _, stderr, _ = distill(root, teacher, data, "resume-broken", *args)
    assert code == 0, stderr
    a = load_model_file(straight / "model.safetensors").model.state_dict()
    b = load_model_file(broken / "model.safetensors").model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    ra, rb = records(straight), records(broken)
    assert [r["dcl"] for r in ra] == [r["dcl"] for r in rb][-len(ra):]


def test_without_vqgan_weights_one_line_and_nothing_written(setup, tmp_path):
    root, teacher, data = setup
    out = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("SRKD_VQGAN", None)
    proc = subprocess.run(
        [sys.executable, "-m", "srkd", "distill", "--method", "dckd", "--teacher", str(teacher), "--student", STUDENT,
         "--data", str(data), "--out", str(out), "--steps", "2", "--val", "none", "--threads", "1"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert "--set vqgan=" in lines[0] and "f16 n1024" in lines[0]
    assert not out.exists()
