"""The bundled demo teacher: what it is, how good it is, and that ``srkd distill`` uses it by default.

Its Set5 score is re-measured here on the Set5 copy bundled with the package (HR + official LR
files), so this runs without ``$SRKD_DATA``, and must equal the score on its model card.
"""

from __future__ import annotations

import pytest
from conftest import run_cli

from srkd.distill.run import DEMO_TEACHER
from srkd.evaluate import evaluate
from srkd.io.checkpoint import load_model_file
from srkd.io.hub import model_hash

pytestmark = pytest.mark.skipif(not DEMO_TEACHER.is_file(), reason="the demo teacher file is not in this checkout")


def test_demo_teacher_is_edsr_baseline_x4_with_provenance():
    mf = load_model_file(DEMO_TEACHER)
    net = mf.model
    assert (net.arch, net.scale, net.n_resblocks, net.n_feats) == ("edsr", 4, 16, 64)
    assert sum(p.numel() for p in net.parameters() if p.requires_grad) == 1_517_571  # mean shifts are frozen
    prov = mf.provenance
    assert prov["method"]["method"] == "scratch"  # the second stage warm-starts from the first
    assert len(prov["stages"]) == 2 and prov["init"] and prov["steps"] == sum(st["steps"] for st in prov["stages"])
    assert prov["name"].startswith("srkd demo teacher") and "not the official" in prov["name"]
    assert {"T91", "BSD200"} <= {str(d).rstrip("/").rsplit("/", 1)[-1] for d in prov["data"]}
    assert prov["steps"] >= 8000 and prov["batch"] == 16 and prov["patch"] == 48
    assert all(st["command"].startswith("srkd teacher-train") for st in prov["stages"])
    assert "--init" in prov["stages"][1]["command"]


def test_demo_teacher_set5_x4_is_its_recorded_score():
    mf = load_model_file(DEMO_TEACHER)
    (res,) = evaluate(mf, datasets=("set5",), device="cpu", progress=False)
    assert res.n_images == 5 and res.scale == 4
    assert res.psnr >= 31.2  # the bar; bicubic: 28.43; docs/demo-teacher.md has the card
    # the score recorded at export (same code path as `srkd eval`) is what the file gives
    assert res.psnr == pytest.approx(mf.provenance["val"]["set5"]["psnr"], abs=0.01)


def test_distill_defaults_to_the_demo_teacher(tmp_path):
    out = tmp_path / "run"
    code, stdout, stderr = run_cli("distill", "--method", "kd", "--student", "edsr:n_resblocks=1,n_feats=8,res_scale=1",
                                   "--steps", "2", "--batch", "2", "--patch", "12", "--threads", "1",
                                   "--val", "none", "--out", str(out))
    assert code == 0, stderr
    prov = load_model_file(out / "model.safetensors").provenance
    teacher = prov["method"]["teacher"]
    assert teacher["ref"] == str(DEMO_TEACHER.resolve())
    assert teacher["sha256"] == model_hash(DEMO_TEACHER)
    assert load_model_file(out / "model.safetensors").model.scale == 4
