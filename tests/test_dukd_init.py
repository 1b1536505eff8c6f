"""Warm start across scales (``--init``): everything but the upsampler loads, and the skipped
tensors are reported."""

from __future__ import annotations

import pytest
import torch

from srkd.distill.init import init_student
from srkd.errors import SrkdError
from srkd.io.checkpoint import save_model
from srkd.models import build_from_spec



def _saved(tmp_path, spec, name="src.safetensors", seed=1):
    torch.manual_seed(seed)
    model = build_from_spec(spec)
    path = tmp_path / name
    save_model(model, path)
    return model, path


@pytest.mark.parametrize("arch", ["edsr:n_resblocks=2,n_feats=8", "rcan:n_resgroups=1,n_resblocks=2,n_feats=16"])
def test_x2_checkpoint_starts_a_x4_student_except_the_upsampler(tmp_path, arch):
    src, path = _saved(tmp_path, f"{arch},scale=2")
    torch.manual_seed(2)
    student = build_from_spec(f"{arch},scale=4")
    fresh = {k: v.clone() for k, v in student.state_dict().items()}
    lines = []
    report = init_student(student, str(path), log=lines.append)

    src_state, got = src.state_dict(), student.state_dict()
    tail = sorted(k for k in got if k.startswith("tail."))
    assert sorted(report.skipped) == tail and len(tail) > 0
    assert sorted(report.loaded) == sorted(k for k in got if not k.startswith("tail."))
    for k in report.loaded:
        assert torch.equal(got[k], src_state[k]), k
    for k in tail:
        assert torch.equal(got[k], fresh[k]), k
    assert any(not torch.equal(fresh[k], src_state[k]) for k in report.loaded if k.startswith("body."))
    assert len(lines) == 1 and "tail.0.0.weight" in lines[0] and "x2" in lines[0]


def test_same_scale_loads_everything(tmp_path):
    src, path = _saved(tmp_path, "edsr:n_resblocks=2,n_feats=8,scale=3")
    student = build_from_spec("edsr:n_resblocks=2,n_feats=8,scale=3")
    report = init_student(student, str(path), log=None)
    assert report.skipped == []
    x = torch.rand(1, 3, 6, 6)
    with torch.no_grad():
        assert torch.equal(student.eval()(x), src.eval()(x))


def test_carn_m_bundled_multiscale_file_gives_its_head_of_the_same_scale_only():
    from srkd.io.hub import load_model

    src = load_model("default").model.state_dict()  # the bundled CARN-M, heads x2/x3/x4
    student = build_from_spec("carn-m-x4")
    report = init_student(student, "default", log=None)
    assert report.skipped == []
    got = student.state_dict()
    assert torch.equal(got["upsample.up.body.0.weight"], src["upsample.up4.body.0.weight"])
    assert torch.equal(got["entry.weight"], src["entry.weight"])

    torch.manual_seed(0)
    student = build_from_spec("carn-m:scale=8")  # no x8 head in the file: the upsampler stays fresh
    fresh = student.state_dict()["upsample.up.body.0.weight"].clone()
    report = init_student(student, "default", log=None)
    assert report.skipped and all(k.startswith("upsample.") for k in report.skipped)
    assert torch.equal(student.state_dict()["upsample.up.body.0.weight"], fresh)
    assert torch.equal(student.state_dict()["entry.weight"], src["entry.weight"])


def test_init_leaves_the_global_rng_alone(tmp_path):
    _, path = _saved(tmp_path, "edsr:n_resblocks=2,n_feats=8,scale=2")
    torch.manual_seed(5)
    init_student(build_from_spec("edsr:n_resblocks=2,n_feats=8,scale=4"), str(path), log=None)
    after = torch.rand(3)
    torch.manual_seed(5)
    build_from_spec("edsr:n_resblocks=2,n_feats=8,scale=4")
    assert torch.equal(after, torch.rand(3))


def test_mismatches_are_one_line_errors(tmp_path):
    _, path = _saved(tmp_path, "edsr:n_resblocks=2,n_feats=8,scale=2")
    with pytest.raises(SrkdError, match="width"):
        init_student(build_from_spec("edsr:n_resblocks=2,n_feats=16,scale=4"), str(path), log=None)
    with pytest.raises(SrkdError, match="missing"):
        init_student(build_from_spec("edsr:n_resblocks=3,n_feats=8,scale=4"), str(path), log=None)
    with pytest.raises(SrkdError, match="same architecture"):
        init_student(build_from_spec("rcan:n_resgroups=1,n_resblocks=2,n_feats=16,scale=4"), str(path), log=None)
    with pytest.raises(SrkdError, match="not found"):
        init_student(build_from_spec("edsr:n_resblocks=2,n_feats=8,scale=4"), str(tmp_path / "nope.safetensors"), log=None)
