"""``srkd compress``, teacher-slice initialisation and the compression report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import run_cli

from srkd.complexity import count_macs, count_params
from srkd.compress import compression_report, extract_student, init_from_teacher_slice, macs_of, width_from_provenance
from srkd.errors import SrkdError
from srkd.io.checkpoint import load_model_file, save_model
from srkd.models import build_from_spec
from srkd.compress.slim import slim_forward

REPO = Path(__file__).resolve().parents[1]


def _teacher(spec="edsr:n_feats=32,n_resblocks=2,scale=4", seed=0):
    torch.manual_seed(seed)
    return build_from_spec(spec).eval()


@pytest.fixture
def teacher_file(tmp_path):
    path = tmp_path / "teacher.safetensors"
    save_model(_teacher(), path, provenance={"method": {"method": "csd"}, "slim_width": 0.25})
    return path


def test_cli_compress_writes_a_plain_student(tmp_path, teacher_file):
    out, report = tmp_path / "student.safetensors", tmp_path / "report.json"
    code, stdout, stderr = run_cli("compress", str(teacher_file), "--width", "0.5", "-o", str(out),
                                   "--no-eval", "--repeats", "1", "--speed-size", "16", "--json", str(report))
    assert code == 0, stderr
    loaded = load_model_file(out)
    assert loaded.model.arch == "edsr" and loaded.model.n_feats == 16
    assert loaded.provenance["width"] == 0.5 and loaded.provenance["source_provenance"]["slim_width"] == 0.25
    teacher = load_model_file(teacher_file).model
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        assert (loaded.model(x) - slim_forward(teacher, x, 0.5)).abs().max().item() < 1e-5
    data = json.loads(report.read_text())
    assert data["teacher"]["params"] == count_params(teacher)
    assert data["student"]["params"] == count_params(loaded.model)
    assert data["compression"] > 3  # ~ 1/w^2 for a conv body
    assert data["speedup"] is not None and data["student"]["seconds"] > 0
    assert "parameters" in stdout and "multiply-adds" in stdout
    # the CSD width recorded in the provenance is the default
    out2 = tmp_path / "default-width.safetensors"
    code, _, stderr = run_cli("compress", str(teacher_file), "-o", str(out2), "--no-eval", "--repeats", "0")
    assert code == 0, stderr
    assert load_model_file(out2).model.n_feats == 8
    # no overwrite without --overwrite
    code, _, stderr = run_cli("compress", str(teacher_file), "--width", "0.5", "-o", str(out), "--no-eval")
    assert code == 2 and "--overwrite" in stderr


def test_compressed_student_is_accepted_by_eval(tmp_path, teacher_file):
    out, report = tmp_path / "student.safetensors", tmp_path / "report.json"
    code, stdout, stderr = run_cli("compress", str(teacher_file), "--width", "0.25", "-o", str(out),
                                   "--repeats", "0", "--dataset", "set5", "--json", str(report))
    assert code == 0, stderr
    data = json.loads(report.read_text())
    assert set(data["teacher"]["psnr"]) == set(data["student"]["psnr"]) == {"Set5"}
    assert 5 < data["student"]["psnr"]["Set5"] < 60
    code, stdout, stderr = run_cli("eval", str(out), "--dataset", "set5")
    assert code == 0, stderr
    assert "set5" in stdout.lower()
    # srkd upscale loads it too (no slimmable code anywhere on that path)
    from PIL import Image

    src = tmp_path / "in.png"
    Image.new("RGB", (10, 7), (120, 60, 30)).save(src)
    code, _, stderr = run_cli("upscale", str(src), "--model", str(out), "-o", str(tmp_path / "up.png"))
    assert code == 0, stderr
    assert Image.open(tmp_path / "up.png").size == (40, 28)


@pytest.mark.parametrize("width", ["0", "-0.5", "1.5"])
def test_cli_bad_width(tmp_path, teacher_file, width):
    code, _, stderr = run_cli("compress", str(teacher_file), "--width", width, "-o", str(tmp_path / "s.safetensors"))
    assert code == 2
    assert "width must be in (0, 1]" in stderr and len(stderr.strip().splitlines()) == 1
    assert not (tmp_path / "s.safetensors").exists()


def test_cli_errors_in_a_subprocess(tmp_path, teacher_file):
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "srkd", "compress", str(teacher_file), "--width", "1.5", "-o",
                           str(tmp_path / "s.safetensors")], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("srkd: error: width")
    plain = tmp_path / "plain.safetensors"
    save_model(_teacher(), plain)  # no provenance: the width must be given
    code, _, stderr = run_cli("compress", str(plain), "-o", str(tmp_path / "s.safetensors"))
    assert code == 2 and "--width" in stderr
    code, _, stderr = run_cli("compress", str(tmp_path / "missing.safetensors"), "--width", "0.5",
                              "-o", str(tmp_path / "s.safetensors"))
    assert code == 2 and "not found" in stderr
    carn_m = tmp_path / "carn_m.safetensors"
    save_model(_teacher("carn-m:n_feats=32,group=4,scale=2"), carn_m)
    code, _, stderr = run_cli("compress", str(carn_m), "--width", "0.3", "-o", str(tmp_path / "s.safetensors"))
    assert code == 2 and "multiple of 4" in stderr


def test_init_from_teacher_slice():
    teacher = _teacher("edsr:n_feats=32,n_resblocks=2,res_scale=0.1,scale=4")
    student = build_from_spec("edsr:n_feats=8,n_resblocks=2,res_scale=0.1,scale=4")
    info = init_from_teacher_slice(student, teacher)
    assert info == {"init": "teacher-slice", "width": 0.25}
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        assert (student(x) - slim_forward(teacher, x, 0.25)).abs().max().item() < 1e-5
    with pytest.raises(SrkdError, match="n_resblocks"):
        init_from_teacher_slice(build_from_spec("edsr:n_feats=8,n_resblocks=1,res_scale=0.1,scale=4"), teacher)
    with pytest.raises(SrkdError, match="family"):
        init_from_teacher_slice(build_from_spec("rcan:n_feats=16,n_resgroups=1,n_resblocks=1,scale=4"), teacher)
    with pytest.raises(SrkdError, match="more than"):
        init_from_teacher_slice(build_from_spec("edsr:n_feats=64,n_resblocks=2,res_scale=0.1,scale=4"), teacher)


def test_init_single_scale_student_from_multiscale_teacher():
    teacher = _teacher("carn-m:n_feats=32,group=4,scales=[2,3,4],scale=4")
    student = build_from_spec("carn-m:n_feats=16,group=4,scale=3")
    init_from_teacher_slice(student, teacher)
    teacher.set_scale(3)
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        assert (student(x) - slim_forward(teacher, x, 0.5)).abs().max().item() < 1e-5


def test_report_counts_and_meta_macs():
    teacher = _teacher("rcan:n_feats=32,n_resgroups=1,n_resblocks=2,reduction=8,scale=2")
    student = extract_student(teacher, 0.5)
    assert macs_of(teacher, (16, 16)) == count_macs(teacher, (16, 16))
    rep = compression_report(teacher, student, 0.5, lr_size=(16, 16), repeats=1, datasets=())
    assert rep.teacher.params == count_params(teacher) and rep.student.params == count_params(student)
    assert rep.student.n_feats == 16 and rep.teacher.n_feats == 32
    # a conv body scales with w^2; head, tail and attention keep it below 4x
    assert 3.0 < rep.compression < 4.0 and 3.0 < rep.mac_ratio < 4.0
    assert rep.student.psnr == {} and rep.speedup > 0


def test_width_from_provenance():
    assert width_from_provenance({"provenance": json.dumps({"slim_width": 0.25})}) == 0.25
    # an exported CSD student describes its method but is already cut: no default width
    student_prov = {"method": {"method": "csd", "params": {"width": 0.5}}}
    assert width_from_provenance({"provenance": json.dumps(student_prov)}) is None
    assert width_from_provenance({}) is None


def test_compress_api_cuts_writes_and_measures(tmp_path):
    import srkd
    from srkd.io.checkpoint import save_model
    from srkd.models import build_from_spec

    src = save_model(build_from_spec("edsr:n_resblocks=2,n_feats=16,scale=2"), tmp_path / "t.safetensors")
    result = srkd.compress(str(src), 0.5, tmp_path / "s.safetensors", datasets=(), repeats=1, speed_size=16)
    assert result.output.is_file() and result.student.n_feats == 8 and result.report.student.params < result.report.teacher.params
    cut = srkd.compress.cut(str(src), 0.5)
    assert cut.output is None and cut.report is None and cut.student.n_feats == 8


def test_a_too_small_speed_size_is_one_line_before_anything_is_written(tmp_path, teacher_file):
    out = tmp_path / "student.safetensors"
    code, stdout, stderr = run_cli("compress", str(teacher_file), "--width", "0.5", "-o", str(out), "--speed-size", "4")
    assert code == 2 and "--speed-size must be at least 8 pixels, got 4" in stderr and "Traceback" not in stderr
    assert not out.exists()
    with pytest.raises(SrkdError, match="at least 8 pixels"):
        import srkd
        srkd.compress(str(teacher_file), 0.5, out, datasets=(), repeats=1, speed_size=4)
    assert not out.exists()
