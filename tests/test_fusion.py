"""srkd.infer.fusion: inference rewrites compute the same function, and are refused where they would not."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from srkd.infer.fusion import (
    CatFreeCascade,
    ConvReLU,
    FoldedShuffleConv,
    ResidualReLU,
    find_shuffle_conv_pairs,
    fold_shuffles,
    fuse_cascades,
    fuse_conv_relu,
)
from srkd.infer import SrkdWarning, Upscaler
from srkd.models.registry import build_from_spec


SMALL = {
    "edsr": "edsr:n_resblocks=2,n_feats=16,res_scale=0.1",
    "rcan": "rcan:n_resgroups=2,n_resblocks=2,n_feats=16,reduction=4",
    "carn": "carn:n_feats=8",
    "carn-m": "carn-m:n_feats=8",
}


@pytest.mark.parametrize("r", [2, 3])
def test_folded_conv_equals_conv_after_shuffle_also_at_the_border(r):
    torch.manual_seed(0)
    conv = nn.Conv2d(5, 3, 3, 1, 1)
    z = torch.randn(2, 5 * r * r, 7, 9)
    with torch.no_grad():
        ref = conv(F.pixel_shuffle(z, r))
        out = FoldedShuffleConv(conv, r)(z)
    assert out.shape == ref.shape
    assert float((out - ref).abs().max()) < 1e-5
    # border rows and columns are where a wrong padding would show
    assert float((out[..., 0, :] - ref[..., 0, :]).abs().max()) < 1e-5
    assert float((out[..., :, -1] - ref[..., :, -1]).abs().max()) < 1e-5


def test_folded_weight_layout_by_hand():
    """One tap, one channel, x2: the folded kernel puts it where the shuffle sends that sub-pixel."""
    conv = nn.Conv2d(1, 1, 3, 1, 1, bias=False)
    conv.weight.data.zero_()
    conv.weight.data[0, 0, 0, 0] = 1.0  # out[Y, X] = in[Y-1, X-1]
    w = FoldedShuffleConv(conv, 2).conv.weight
    # output phase (0,0) at cell (y,x) reads HR (2y-1, 2x-1): cell (y-1, x-1), phase (1,1) = channel 3
    assert w[0, 3, 0, 0] == 1.0
    # output phase (1,1) reads HR (2y, 2x): the same cell, phase (0,0)
    assert w[3, 0, 1, 1] == 1.0
    assert int((w != 0).sum()) == 4  # one tap per output phase


@pytest.mark.parametrize("arch", sorted(SMALL))
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_rewrites_keep_every_architecture_exact(arch, scale):
    torch.manual_seed(0)
    net = build_from_spec(f"{SMALL[arch]},scale={scale}").eval()
    x = torch.rand(1, 3, 13, 18)
    with torch.no_grad():
        ref = net(x)
        fast = copy.deepcopy(net)
        folded = fold_shuffles(fast, torch.rand(1, 3, 12, 12))
        cascades = fuse_cascades(fast)
        fused = fuse_conv_relu(fast)
        out = fast(x)
    assert folded == (0 if scale == 3 else 1)  # x3 is not folded (9x the multiply-adds)
    assert cascades == (4 if arch.startswith("carn") else 0)  # three blocks and the global cascade
    assert fused > 0 and any(isinstance(m, ConvReLU) for m in fast.modules())
    assert any(isinstance(m, ResidualReLU) for m in fast.modules()) == arch.startswith("carn")
    assert float((out - ref).abs().max()) < 1e-5


def test_fused_conv_relu_in_bf16_channels_last_matches_unfused():
    torch.manual_seed(0)
    seq = nn.Sequential(nn.Conv2d(16, 16, 3, 1, 1, groups=4), nn.ReLU(), nn.Conv2d(16, 8, 1), nn.ReLU()).bfloat16()
    x = torch.randn(1, 16, 20, 20).bfloat16().contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        ref = seq(x)
        fused = copy.deepcopy(seq)
        assert fuse_conv_relu(fused) == 2
        out = fused(x)
    assert out.dtype == torch.bfloat16 and float(out.min()) >= 0
    assert float((out.float() - ref.float()).abs().max()) <= 0.02 * float(ref.float().abs().max())


class _ShuffleTwice(nn.Module):
    """A shuffle output read by a conv *and* by an addition: skipping the shuffle would be wrong."""

    def __init__(self):
        super().__init__()
        self.head = nn.Conv2d(3, 12, 3, 1, 1)
        self.ps = nn.PixelShuffle(2)
        self.out = nn.Conv2d(3, 3, 3, 1, 1)

    def forward(self, x):
        h = self.ps(self.head(x))
        return self.out(h) + h


def test_a_shuffle_used_elsewhere_is_caught_and_the_model_runs_unfused():
    torch.manual_seed(0)
    net = _ShuffleTwice().eval()
    assert find_shuffle_conv_pairs(net, torch.rand(1, 3, 8, 8))  # the hook sees only the conv
    x = torch.rand(1, 3, 10, 10)
    with torch.no_grad():
        ref = net(x)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        up = Upscaler(net, precision="fp32", tile=None)
    assert any("unfused" in str(w.message) for w in caught if issubclass(w.category, SrkdWarning))
    assert up.rewrites == {"folded_shuffles": 0, "conv_relu": 0, "cat_free_cascades": 0}
    out = up.process(x)
    assert float((out - ref.clamp(0, 1)).abs().max()) < 1e-5


def test_shared_modules_are_not_folded():
    """CARN-M's shared unit: a module called at several places is rewritten for all or none."""
    conv = nn.Conv2d(3, 3, 3, 1, 1)

    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.ps, self.out = nn.Conv2d(3, 12, 1), nn.PixelShuffle(2), conv

        def forward(self, x):
            y = self.out(self.ps(self.a(x)))
            return self.out(F.avg_pool2d(y, 2)) + x  # the same conv again, after no shuffle

    assert find_shuffle_conv_pairs(Twice().eval(), torch.rand(1, 3, 8, 8)) == []


def test_upscaler_rewrites_the_bundled_model_and_leaves_the_callers_alone():
    from srkd.io.hub import load_model

    net = load_model(None).model  # CARN-M x4, official weights
    before = [type(m) for m in net.modules()]
    up = Upscaler(net, precision="fp32", tile=None)
    assert up.rewrites == {"folded_shuffles": 1, "conv_relu": 25, "cat_free_cascades": 4}
    assert [type(m) for m in net.modules()] == before
    x = torch.rand(1, 3, 40, 44)
    plain = Upscaler(net, precision="fp32", tile=None, fuse=False)
    assert plain.rewrites == {"folded_shuffles": 0, "conv_relu": 0, "cat_free_cascades": 0}
    assert up.tile_pad == plain.tile_pad  # the trace sees the original network
    assert float((up.process(x) - plain.process(x)).abs().max()) < 1e-5


def _cascade_by_hand(x, units, weights, biases):
    """The cascade written out from its definition: relu(W_k cat(members) + b_k)."""
    members, out = [x], x
    for unit, w, b in zip(units, weights, biases):
        members.append(unit(out))
        out = torch.relu(F.conv2d(torch.cat(members, 1), w, b))
    return out


@pytest.mark.parametrize("arch", ["carn", "carn-m"])
def test_cat_free_cascade_equals_the_concatenating_one(arch):
    torch.manual_seed(0)
    net = build_from_spec(f"{SMALL[arch]},scale=2").eval()
    block = net.b2
    x = torch.randn(1, 8, 11, 14).relu()
    fuses = (block.c1, block.c2, block.c3)
    with torch.no_grad():
        ref = _cascade_by_hand(x, block.cascade.units, [f.body[0].weight for f in fuses], [f.body[0].bias for f in fuses])
        assert float((block(x) - ref).abs().max()) < 1e-6  # the model's own cascade is the definition
        fast = copy.deepcopy(block)
        assert fuse_cascades(fast) == 1 and isinstance(fast.cascade, CatFreeCascade)
        assert float((fast(x) - ref).abs().max()) < 1e-5  # fp32: only the summation order differs
        low = copy.deepcopy(fast).bfloat16().to(memory_format=torch.channels_last)
        xb = x.bfloat16().contiguous(memory_format=torch.channels_last)
        out = low(xb)
        ref_low = copy.deepcopy(block).bfloat16()(xb)
    assert out.dtype == torch.bfloat16 and float(out.float().min()) >= 0
    # bf16: each partial sum is rounded once more than in the concatenating version
    assert float((out.float() - ref_low.float()).abs().max()) <= 0.03 * float(ref_low.float().abs().max())
    # Under autocast the fused ops do not apply: the original cascade runs.
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(fast(x), block(x))


def test_cascades_with_other_fuses_are_left_alone():
    torch.manual_seed(0)
    net = build_from_spec(f"{SMALL['carn']},scale=2").eval()
    net.b1.c2.body[1] = nn.Tanh()  # not conv + ReLU any more
    assert not CatFreeCascade.applies(net.b1.cascade) and CatFreeCascade.applies(net.b2.cascade)
    assert fuse_cascades(net) == 3 and not isinstance(net.b1.cascade, CatFreeCascade)


def test_rewritten_units_run_inside_the_cat_free_cascades():
    """Cascades look their units up by name, so the fused residual units are the ones that run."""
    torch.manual_seed(0)
    net = build_from_spec(f"{SMALL['carn-m']},scale=2").eval()
    fast = copy.deepcopy(net)
    assert fuse_cascades(fast) == 4 and fuse_conv_relu(fast) > 0
    calls = []
    for m in fast.modules():
        if isinstance(m, (ResidualReLU, CatFreeCascade)):
            m.register_forward_hook(lambda mod, i, o: calls.append(type(mod).__name__))
    x = torch.rand(1, 3, 12, 15)
    with torch.no_grad():
        assert float((fast(x) - net(x)).abs().max()) < 1e-5
    assert calls.count("ResidualReLU") == 9 and calls.count("CatFreeCascade") == 4  # 3 blocks x 3 uses
