"""Channel splitting (srkd.compress.slim) and student extraction (srkd.compress.extract_student)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from srkd.compress import extract_student
from srkd.errors import SrkdError
from srkd.models import build_from_spec
from srkd.compress.slim import Slimmable, check_width, slim_config, slim_forward, slim_state_dict, split_channels


# Small configurations; the third width of each gives a channel count that is not w*C exactly.
CASES = {
    "edsr": ("edsr:n_feats=32,n_resblocks=2,res_scale=0.1,scale=4", (0.25, 0.5, 0.3)),
    "rcan": ("rcan:n_feats=32,n_resgroups=2,n_resblocks=2,reduction=8,scale=3", (0.25, 0.5, 0.3)),
    "carn": ("carn:n_feats=24,scale=2", (0.25, 0.5, 0.3)),
    # group 4: the kept count must be a multiple of 4; 0.4*32 = 12.8 -> 12
    "carn-m": ("carn-m:n_feats=32,group=4,scale=4", (0.25, 0.5, 0.4)),
}


def _model(spec: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = build_from_spec(spec).eval()
    # Random biases make every channel carry signal (default init leaves some near zero).
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") and not name.startswith(("sub_mean", "add_mean")):
                p.normal_(0, 0.05)
    return model


@pytest.mark.parametrize("arch", list(CASES))
def test_extracted_student_equals_slim_forward(arch):
    spec, widths = CASES[arch]
    teacher = _model(spec)
    x = torch.rand(2, 3, 12, 10)
    for width in widths:
        student = extract_student(teacher, width)
        assert student.n_feats == split_channels(teacher.n_feats, width)
        assert type(student) is type(teacher)
        with torch.no_grad():
            a = slim_forward(teacher, x, width)
            b = student(x)
        assert a.shape == (2, 3, 12 * teacher.scale, 10 * teacher.scale)
        diff = (a - b).abs().max().item()
        assert diff < 1e-5, f"{arch} width {width}: max abs diff {diff}"
        # the student really is smaller and different from the teacher
        assert sum(p.numel() for p in student.parameters()) < sum(p.numel() for p in teacher.parameters())
        with torch.no_grad():
            assert (teacher(x) - b).abs().max().item() > 1e-3


@pytest.mark.parametrize("arch", list(CASES))
def test_width_one_is_the_model(arch):
    teacher = _model(CASES[arch][0])
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(slim_forward(teacher, x, 1.0), teacher(x))
        assert torch.equal(Slimmable(teacher, 1.0)(x), teacher(x))


def _official_edsr_forward(model, x, width):
    """EDSR at ``width`` written as the official CSD code does it: weight[:int(Co*w), :int(Ci*w)]."""
    def conv(m, h, out_keep=None, in_keep=None):
        w, b = m.weight, m.bias
        co = w.shape[0] if out_keep is None else out_keep
        ci = w.shape[1] if in_keep is None else in_keep
        return F.conv2d(h, w[:co, :ci], b[:co], padding=m.padding)

    n = int(model.n_feats * width)
    h = model.sub_mean(x * model.rgb_range)
    h = conv(model.head[0], h, out_keep=n)
    res = h
    for block in model.body[:-1]:
        t = conv(block.body[2], F.relu(conv(block.body[0], res, n, n)), n, n)
        res = t * block.res_scale + res
    res = conv(model.body[-1], res, n, n) + h
    for layer in model.tail[0]:
        if isinstance(layer, nn.Conv2d):
            # official: int(4*C*w); equal to 4*int(C*w) when w*C is whole, and the only
            # PixelShuffle-consistent choice when it is not
            res = conv(layer, res, layer.out_channels // model.n_feats * n, n)
        else:
            res = layer(res)
    res = conv(model.tail[1], res, in_keep=n)
    return model.add_mean(res) / model.rgb_range


@pytest.mark.parametrize("width", [0.25, 0.5, 0.3])
def test_edsr_matches_official_prefix_rule(width):
    model = _model("edsr:n_feats=32,n_resblocks=2,res_scale=0.1,scale=4")
    x = torch.rand(1, 3, 9, 9)
    with torch.no_grad():
        ref = _official_edsr_forward(model, x, width)
        got = slim_forward(model, x, width)
    assert (ref - got).abs().max().item() < 1e-5


def test_rcan_attention_squeeze_keeps_one_channel():
    # 32 features, reduction 16: width 0.25 keeps 8 channels, 8 // 16 = 0 -> one squeeze channel
    teacher = _model("rcan:n_feats=32,n_resgroups=1,n_resblocks=2,reduction=16,scale=2")
    sliced = slim_state_dict(teacher, 0.25)
    assert sliced["body.0.body.0.body.3.conv_du.0.weight"].shape == (1, 8, 1, 1)
    assert sliced["body.0.body.0.body.3.conv_du.2.weight"].shape == (8, 1, 1, 1)
    cfg = slim_config(teacher, 0.25)
    assert cfg["n_feats"] == 8 and cfg["reduction"] == 8
    # width 0.5: 16 // 16 = 1 = official int(32/16 * 0.5); reduction unchanged
    assert slim_config(teacher, 0.5)["reduction"] == 16
    student = extract_student(teacher, 0.25)
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        assert (student(x) - slim_forward(teacher, x, 0.25)).abs().max().item() < 1e-5


def test_carn_m_groups_are_sliced_per_group():
    teacher = _model("carn-m:n_feats=32,group=4,scale=4")
    student = extract_student(teacher, 0.5)  # 16 channels, 4 per group
    conv_t, conv_s = teacher.b1.b1.body[0], student.b1.b1.body[0]
    assert conv_s.groups == 4 and conv_s.weight.shape == (16, 4, 3, 3)
    # group j of the teacher holds outputs 8j..8j+7; the student keeps the first 4 of each
    keep = [8 * j + i for j in range(4) for i in range(4)]
    assert torch.equal(conv_s.weight, conv_t.weight[keep, :4])
    # the grouped x2 upsampler: sub-pixel outputs c*4+k of the kept channels c
    up_t, up_s = teacher.upsample.up.body[0], student.upsample.up.body[0]
    sub = [4 * c + k for c in keep for k in range(4)]
    assert torch.equal(up_s.weight, up_t.weight[sub, :4])
    # the ungrouped 1x1 fusion of a 2C concatenation keeps the kept channels of both halves
    fuse_t, fuse_s = teacher.b1.c1.body[0], student.b1.c1.body[0]
    assert torch.equal(fuse_s.weight, fuse_t.weight[keep][:, keep + [32 + k for k in keep]])


def test_multiscale_carn_extracts_every_head():
    teacher = _model("carn:n_feats=24,scales=[2,3,4],scale=4")
    student = extract_student(teacher, 0.5)
    assert student.scales == (2, 3, 4) and student.scale == 4
    x = torch.rand(1, 3, 8, 8)
    for s in (2, 3, 4):
        teacher.set_scale(s)
        student.set_scale(s)
        with torch.no_grad():
            assert (student(x) - slim_forward(teacher, x, 0.5)).abs().max().item() < 1e-5


def test_gradient_reaches_only_the_kept_slice():
    model = _model("edsr:n_feats=16,n_resblocks=1,scale=2")
    slim = Slimmable(model, 0.5)
    slim(torch.rand(2, 3, 6, 6)).abs().mean().backward()
    g = model.head[0].weight.grad
    assert g[:8].abs().sum() > 0 and g[8:].abs().sum() == 0
    g_body = model.body[0].body[0].weight.grad
    assert g_body[:8, :8].abs().sum() > 0 and g_body[8:].abs().sum() == 0 and g_body[:, 8:].abs().sum() == 0
    g_up = model.tail[0][0].weight.grad  # 64 sub-pixel outputs, first 8*4 kept
    assert g_up[:32, :8].abs().sum() > 0 and g_up[32:].abs().sum() == 0


@pytest.mark.parametrize("bad", [0, -0.25, 1.5, float("nan"), "abc"])
def test_bad_widths(bad):
    with pytest.raises(SrkdError, match="width"):
        check_width(bad)
    model = _model(CASES["edsr"][0])
    with pytest.raises(SrkdError):
        slim_forward(model, torch.rand(1, 3, 4, 4), bad)
    with pytest.raises(SrkdError):
        extract_student(model, bad)


def test_width_too_small_and_uneven_groups():
    model = _model(CASES["edsr"][0])  # 32 features: 1/64 keeps none
    with pytest.raises(SrkdError, match="no channel"):
        extract_student(model, 1 / 64)
    carn_m = _model(CASES["carn-m"][0])
    with pytest.raises(SrkdError, match="multiple of 4"):
        extract_student(carn_m, 0.3)  # 9 channels over 4 groups


def test_unsplittable_architecture():
    class Other(nn.Module):
        arch = "swinir"
        n_feats = 16
        scale = 2

        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 16, 3)

    with pytest.raises(SrkdError, match="cannot be channel-split"):
        extract_student(Other(), 0.5)
    with pytest.raises(SrkdError, match="cannot be channel-split"):
        Slimmable(Other(), 0.5)

    model = _model(CASES["edsr"][0])
    model.body[0].add_module("norm", nn.BatchNorm2d(32))  # a layer the rules do not know
    with pytest.raises(SrkdError, match="not covered"):
        slim_state_dict(model, 0.5)
