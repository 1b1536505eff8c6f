"""Architectures: official state-dict names and shapes, save/load round trips, feature taps."""

from __future__ import annotations

import pytest
import torch

from conftest import data_path
from srkd.io.checkpoint import load_model_file, save_model
from srkd.models import PRESETS, build_from_spec, build_model, describe
from srkd.models.registry import parse_spec
from srkd.errors import SrkdError


def conv(name, cout, cin, k=3):
    return {f"{name}.weight": (cout, cin, k, k), f"{name}.bias": (cout,)}


def official_edsr_keys(n_resblocks, f, scale):
    """EDSR-PyTorch names and shapes, written from ecosystem.md §B.1 (independent of srkd code)."""
    keys = {**conv("sub_mean", 3, 3, 1), **conv("add_mean", 3, 3, 1), **conv("head.0", f, 3)}
    for i in range(n_resblocks):
        keys.update(conv(f"body.{i}.body.0", f, f))
        keys.update(conv(f"body.{i}.body.2", f, f))
    keys.update(conv(f"body.{n_resblocks}", f, f))
    if scale == 3:
        keys.update(conv("tail.0.0", 9 * f, f))
    else:
        for j in range({2: 1, 4: 2}[scale]):
            keys.update(conv(f"tail.0.{2 * j}", 4 * f, f))
    keys.update(conv("tail.1", 3, f))
    return keys


def official_rcan_keys(groups, blocks, f, reduction, scale):
    keys = {**conv("sub_mean", 3, 3, 1), **conv("add_mean", 3, 3, 1), **conv("head.0", f, 3)}
    for g in range(groups):
        for b in range(blocks):
            p = f"body.{g}.body.{b}.body"
            keys.update(conv(f"{p}.0", f, f))
            keys.update(conv(f"{p}.2", f, f))
            keys.update(conv(f"{p}.3.conv_du.0", f // reduction, f, 1))
            keys.update(conv(f"{p}.3.conv_du.2", f, f // reduction, 1))
        keys.update(conv(f"body.{g}.body.{blocks}", f, f))
    keys.update(conv(f"body.{groups}", f, f))
    if scale == 3:
        keys.update(conv("tail.0.0", 9 * f, f))
    else:
        for j in range({2: 1, 4: 2}[scale]):
            keys.update(conv(f"tail.0.{2 * j}", 4 * f, f))
    keys.update(conv("tail.1", 3, f))
    return keys


def shapes(model):
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_edsr_official_names(scale):
    with torch.device("meta"):
        assert shapes(build_from_spec(f"edsr-baseline-x{scale}")) == official_edsr_keys(16, 64, scale)
        assert shapes(build_from_spec(f"edsr-x{scale}")) == official_edsr_keys(32, 256, scale)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_rcan_official_names(scale):
    with torch.device("meta"):
        assert shapes(build_from_spec(f"rcan-x{scale}")) == official_rcan_keys(10, 20, 64, 16, scale)


def test_official_parameter_counts():
    # EDSR-PyTorch README: baseline 1.37M/1.55M/1.52M, EDSR 40.7M/43.7M/43.1M; CARN x2 path 964,187
    # numbers (Super-Resolution-Zoo MXNet file, MANIFEST.md); CARN-M file 414,811 numbers.
    with torch.device("meta"):
        count = {n: sum(p.numel() for p in build_from_spec(n).state_dict().values()) for n in PRESETS}
        multi = sum(v.numel() for v in build_model("carn-m", scale=4, scales=(2, 3, 4)).state_dict().values())
    assert [round(count[f"edsr-baseline-x{s}"] / 1e6, 2) for s in (2, 3, 4)] == [1.37, 1.55, 1.52]
    assert [round(count[f"edsr-x{s}"] / 1e6, 1) for s in (2, 3, 4)] == [40.7, 43.7, 43.1]
    assert count["carn-x2"] == 964_187
    assert multi == 414_811


def test_carn_m_official_file_loads_strict():
    sd = torch.load(data_path("weights", "CARN", "carn_m.pth"), map_location="cpu", weights_only=True)
    model = build_model("carn-m", scale=4, scales=(2, 3, 4))
    assert shapes(model) == {k: tuple(v.shape) for k, v in sd.items()}
    model.load_state_dict(sd, strict=True)
    assert "upsample.up4.body.3.weight" in sd and "b1.b1.body.4.weight" in sd and "sub_mean.shifter.weight" in sd


def test_carn_names_single_and_multi_scale():
    with torch.device("meta"):
        single = shapes(build_model("carn", scale=3))
        multi = shapes(build_model("carn", scale=4, scales=(2, 3, 4)))
    assert single["upsample.up.body.0.weight"] == (576, 64, 3, 3)
    assert multi["upsample.up2.body.0.weight"] == (256, 64, 3, 3)
    assert "upsample.up4.body.3.weight" in multi and "b3.b3.body.2.weight" in multi
    assert multi["b1.c3.body.0.weight"] == (64, 256, 1, 1) and multi["c2.body.0.weight"] == (64, 192, 1, 1)


SMALL = [
    "edsr:n_resblocks=2,n_feats=8,scale=2",
    "edsr:n_resblocks=3,n_feats=8,res_scale=0.1,scale=3",
    "rcan:n_resgroups=2,n_resblocks=2,n_feats=16,reduction=4,scale=4",
    "carn:n_feats=8,scale=2",
    "carn-m:n_feats=8,group=4,scale=4",
    "carn-m:n_feats=8,scales=[2,3,4],scale=3",
]


@pytest.mark.parametrize("spec", SMALL)
def test_save_load_round_trip(spec, tmp_path):
    torch.manual_seed(0)
    model = build_from_spec(spec).eval()
    x = torch.rand(1, 3, 12, 10)
    path = save_model(model, tmp_path / "m.safetensors", provenance={"method": "test"})
    loaded = load_model_file(path)
    assert loaded.model.config() == model.config()
    assert loaded.provenance == {"method": "test"}
    with torch.no_grad():
        ref, out = model(x), loaded.model(x)
    assert out.shape == (1, 3, 12 * model.scale, 10 * model.scale)
    assert torch.equal(ref, out)


@pytest.mark.parametrize("spec", SMALL)
def test_feature_taps_resolve(spec):
    model = build_from_spec(spec)
    taps = describe(model).feature_taps
    assert set(taps) >= {"body1", "body2", "body3"}
    modules = dict(model.named_modules())
    assert all(path in modules for path in taps.values())


def test_custom_student_config():
    arch, cfg = parse_spec("edsr:n_feats=64,n_resblocks=32,res_scale=0.1,scale=4")
    model = build_model(arch, **cfg)
    assert (model.n_feats, model.n_resblocks, model.res_scale, model.scale) == (64, 32, 0.1, 4)
    assert build_from_spec("edsr-x4", n_feats=64).n_feats == 64


@pytest.mark.parametrize("spec,message", [
    ("nonsense-x4", "unknown model"),
    ("edsr:depth=3", "unknown option"),
    ("edsr:scale=5", "scale must be one of"),
    ("edsr:n_feats", "expected key=value"),
])
def test_bad_specs(spec, message):
    with pytest.raises(SrkdError, match=message):
        build_from_spec(spec)
