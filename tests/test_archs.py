"""The efficient-SR architectures (IMDN, RFDN, RLFN, SPAN) and the spec-driven checks every
registered architecture passes.

The official key lists below are written from the official model code (the files each spec's
``reference`` names), independently of srkd's modules; the spec-driven tests are parametrised over
the registry, so a new architecture is covered by adding its spec.
"""

from __future__ import annotations

import contextlib
import math
import shutil
from pathlib import Path

import pytest
import torch
from conftest import data_path, run_cli

from srkd.io.checkpoint import load_model_file, save_model
from srkd.io.convert import convert_state_dict, detect, read_state_dict
from srkd.models import ARCHS, PRESETS, build_from_spec, build_model, describe

EXAMPLES = [spec for arch in ARCHS.values() for spec in arch.examples]
EXAMPLES_BY_ARCH = {name: arch.examples for name, arch in ARCHS.items()}


def conv(name, cout, cin, k=3):
    return {f"{name}.weight": (cout, cin, k, k), f"{name}.bias": (cout,)}


def shapes(model_or_sd):
    sd = model_or_sd.state_dict() if hasattr(model_or_sd, "state_dict") else model_or_sd
    return {k: tuple(v.shape) for k, v in sd.items()}


# ----------------------------------------------------------------------------- official layouts


def official_imdn_keys(nc, nb, scale):
    """ofsoundof/NTIRE2022_ESR models/imdn_baseline.py + basicblock.IMDBlock (mode 'CL')."""
    d, r = int(nc * 0.25), nc - int(nc * 0.25)
    keys = conv("model.0", nc, 3)
    for i in range(nb):
        p = f"model.1.sub.{i}"
        keys.update({**conv(f"{p}.conv1.0", nc, nc), **conv(f"{p}.conv2.0", nc, r), **conv(f"{p}.conv3.0", nc, r),
                     **conv(f"{p}.conv4", d, r), **conv(f"{p}.conv1x1", nc, 4 * d, 1)})
    keys.update(conv(f"model.1.sub.{nb}", nc, nc))
    keys.update(conv("model.2", 3 * scale * scale, nc))
    return keys


def official_rfdn_keys(nf, nm, scale):
    """ofsoundof/NTIRE2022_ESR models/rfdn_baseline/{RFDN,block}.py (RFDB with ESA, f = nf // 4)."""
    dc, f = nf // 2, nf // 4
    keys = conv("fea_conv", nf, 3)
    for i in range(1, nm + 1):
        p = f"B{i}"
        for j in (1, 2, 3):
            keys.update({**conv(f"{p}.c{j}_d", dc, nf, 1), **conv(f"{p}.c{j}_r", nf, nf)})
        keys.update({**conv(f"{p}.c4", dc, nf), **conv(f"{p}.c5", nf, 4 * dc, 1)})
        e = f"{p}.esa"
        keys.update({**conv(f"{e}.conv1", f, nf, 1), **conv(f"{e}.conv_f", f, f, 1), **conv(f"{e}.conv_max", f, f),
                     **conv(f"{e}.conv2", f, f), **conv(f"{e}.conv3", f, f), **conv(f"{e}.conv3_", f, f),
                     **conv(f"{e}.conv4", nf, f, 1)})
    keys.update({**conv("c.0", nf, nf * nm, 1), **conv("LR_conv", nf, nf), **conv("upsampler.0", 3 * scale * scale, nf)})
    return keys


def official_rlfn_keys(fc, mid, scale, esa=16):
    """Amazingren/NTIRE2024_ESR models/team00_RLFN.py (RLFN_Prune / bytedance RLFN)."""
    keys = conv("conv_1", fc, 3)
    for i in range(1, 5):
        p = f"block_{i}"
        keys.update({**conv(f"{p}.c1_r", mid, fc), **conv(f"{p}.c2_r", mid, mid), **conv(f"{p}.c3_r", fc, mid),
                     **conv(f"{p}.c5", fc, fc, 1), **conv(f"{p}.esa.conv1", esa, fc, 1), **conv(f"{p}.esa.conv_f", esa, esa, 1),
                     **conv(f"{p}.esa.conv2", esa, esa), **conv(f"{p}.esa.conv3", esa, esa), **conv(f"{p}.esa.conv4", fc, esa, 1)})
    keys.update({**conv("conv_2", fc, fc), **conv("upsampler.0", 3 * scale * scale, fc)})
    return keys


def official_span_keys(fc, scale, cin=3):
    """spandrel architectures/SPAN/__arch/span.py: Conv3XC(c_in, c_out, gain1=2) everywhere."""

    def c3xc(p, ci, co):
        return {**conv(f"{p}.sk", co, ci, 1), **conv(f"{p}.conv.0", 2 * ci, ci, 1), **conv(f"{p}.conv.1", 2 * co, 2 * ci),
                **conv(f"{p}.conv.2", co, 2 * co, 1), **conv(f"{p}.eval_conv", co, ci)}

    keys = c3xc("conv_1", cin, fc)
    for i in range(1, 7):
        for c in ("c1_r", "c2_r", "c3_r"):
            keys.update(c3xc(f"block_{i}.{c}", fc, fc))
    keys.update({**conv("conv_cat", fc, 4 * fc, 1), **c3xc("conv_2", fc, fc), **conv("upsampler.0", 3 * scale * scale, fc)})
    return keys


def official_swinir_keys(depths, heads, dim, ws, img, upsampler, scale, num_feat=64, mlp=2.0):
    """JingyunLiang/SwinIR models/network_swinir.py: SwinIR(..., resi_connection='1conv')."""
    keys = {**conv("conv_first", dim, 3), "patch_embed.norm.weight": (dim,), "patch_embed.norm.bias": (dim,)}
    n = ws * ws
    for i, (depth, h) in enumerate(zip(depths, heads)):
        for j in range(depth):
            p = f"layers.{i}.residual_group.blocks.{j}"
            keys.update({f"{p}.norm1.weight": (dim,), f"{p}.norm1.bias": (dim,), f"{p}.norm2.weight": (dim,),
                         f"{p}.norm2.bias": (dim,),
                         f"{p}.attn.relative_position_bias_table": ((2 * ws - 1) ** 2, h),
                         f"{p}.attn.relative_position_index": (n, n),
                         f"{p}.attn.qkv.weight": (3 * dim, dim), f"{p}.attn.qkv.bias": (3 * dim,),
                         f"{p}.attn.proj.weight": (dim, dim), f"{p}.attn.proj.bias": (dim,),
                         f"{p}.mlp.fc1.weight": (int(dim * mlp), dim), f"{p}.mlp.fc1.bias": (int(dim * mlp),),
                         f"{p}.mlp.fc2.weight": (dim, int(dim * mlp)), f"{p}.mlp.fc2.bias": (dim,)})
            if j % 2 == 1:  # shifted blocks register attn_mask for img_size
                keys[f"{p}.attn_mask"] = ((img // ws) ** 2, n, n)
        keys.update(conv(f"layers.{i}.conv", dim, dim))
    keys.update({"norm.weight": (dim,), "norm.bias": (dim,), **conv("conv_after_body", dim, dim)})
    if upsampler == "pixelshuffle":
        keys.update(conv("conv_before_upsample.0", num_feat, dim))
        if scale == 3:
            keys.update(conv("upsample.0", 9 * num_feat, num_feat))
        else:
            for k in range(int(math.log2(scale))):
                keys.update(conv(f"upsample.{2 * k}", 4 * num_feat, num_feat))
        keys.update(conv("conv_last", 3, num_feat))
    else:
        keys.update(conv("upsample.0", 3 * scale * scale, dim))
    return keys


OFFICIAL = {
    "imdn-ntire": lambda s: official_imdn_keys(64, 8, s),
    "rfdn-ntire": lambda s: official_rfdn_keys(50, 4, s),
    "rlfn": lambda s: official_rlfn_keys(52, 52, s),
    "rlfn-s": lambda s: official_rlfn_keys(48, 48, s),
    "rlfn-ntire": lambda s: official_rlfn_keys(46, 48, s),
    "span": lambda s: official_span_keys(48, s),
    "span-ch28": lambda s: official_span_keys(28, s),
    "span-ch26": lambda s: official_span_keys(26, s),
    # main_test_swinir.py: classical SwinIR-M (DIV2K s48w8) and lightweight SwinIR-S (s64w8)
    "swinir": lambda s: official_swinir_keys([6] * 6, [6] * 6, 180, 8, 48, "pixelshuffle", s),
    "swinir-light": lambda s: official_swinir_keys([6] * 4, [6] * 4, 60, 8, 64, "pixelshuffledirect", s),
}


@pytest.mark.parametrize("preset", [p for p in PRESETS if p.rsplit("-x", 1)[0] in OFFICIAL])
def test_new_presets_have_the_official_names_and_shapes(preset):
    family, scale = preset.rsplit("-x", 1)
    with torch.device("meta"):
        assert shapes(build_from_spec(preset)) == OFFICIAL[family](int(scale))


NTIRE = {  # file, arch, parameters (MANIFEST.md), config read back
    "imdn_baseline.pth": ("imdn", 893_936, {"n_feats": 64, "n_blocks": 8, "rgb_range": 1.0}),
    "rfdn_baseline.pth": ("rfdn", 433_448, {"n_feats": 50, "n_blocks": 4, "rgb_range": 255.0}),
    "rlfn_ntire2024_baseline.pth": ("rlfn", 317_218, {"n_feats": 46, "mid_feats": 48, "rgb_range": 255.0}),
}


@pytest.mark.parametrize("name", NTIRE)
def test_ntire_files_load_strict_and_are_detected(name):
    path = data_path("weights", "NTIRE_ESR", name)
    raw = torch.load(path, map_location="cpu", weights_only=True)  # the file's own key names
    arch, params, expected = NTIRE[name]
    found, config, _, _ = detect(read_state_dict(path))
    assert found == arch and config["scale"] == 4 and {k: config[k] for k in expected} == expected
    model = build_model(arch, **config)
    model.load_state_dict(raw, strict=True)
    assert sum(v.numel() for v in raw.values()) == params
    assert preset_of(arch, config) in PRESETS


def preset_of(arch, config):
    return {"imdn": "imdn-ntire-x4", "rfdn": "rfdn-ntire-x4", "rlfn": "rlfn-ntire-x4"}[arch]


def test_ntire_presets_point_at_the_released_files():
    from srkd.io.zoo import ZOO, sha256_file

    for name, (arch, _, _) in NTIRE.items():
        entry = ZOO[preset_of(arch, {})]
        path = data_path("weights", "NTIRE_ESR", name)
        assert entry.sha256 == sha256_file(path) and entry.url.endswith("/model_zoo/" + entry.filename)


# ----------------------------------------------------------------------------- SPAN and spandrel


SPANDREL_SPAN_KEYS = (  # SPANArch detect=KeyCondition.has_all(...), spandrel architectures/SPAN/__init__.py
    "conv_1.sk.weight", "block_1.c1_r.sk.weight", "block_1.c1_r.eval_conv.weight", "block_1.c3_r.eval_conv.weight",
    "conv_cat.weight", "conv_2.sk.weight", "conv_2.eval_conv.weight", "upsampler.0.weight",
)


def spandrel_span_hyperparameters(sd):
    """SPANArch.load: channels from conv_1.sk, (scale, out) from get_scale_and_output_channels, norm."""
    num_in_ch = sd["conv_1.sk.weight"].shape[1]
    x = sd["upsampler.0.weight"].shape[0]
    for c in (num_in_ch, 3, 4, 1):
        if x % c == 0 and math.isqrt(x // c) ** 2 == x // c:
            upscale, num_out_ch = math.isqrt(x // c), c
            break
    return {"num_in_ch": num_in_ch, "num_out_ch": num_out_ch, "feature_channels": sd["conv_1.sk.weight"].shape[0],
            "upscale": upscale, "norm": "no_norm" not in sd}


@pytest.mark.parametrize("spec", ["span-x4", "span-x2", "span:n_feats=32,scale=3", "span:n_feats=16,scale=4,norm=false"])
def test_span_file_is_what_spandrel_detects(spec, tmp_path):
    from safetensors.torch import load_file

    torch.manual_seed(0)
    model = build_from_spec(spec).eval()
    sd = load_file(str(save_model(model, tmp_path / "span.safetensors")))  # spandrel reads only the tensors
    assert all(k in sd for k in SPANDREL_SPAN_KEYS)
    hp = spandrel_span_hyperparameters(sd)
    assert hp == {"num_in_ch": 3, "num_out_ch": 3, "feature_channels": model.n_feats, "upscale": model.scale,
                  "norm": model.norm}
    assert set(sd) == set(official_span_keys(model.n_feats, model.scale)) | ({"no_norm"} if not model.norm else set())
    # the stored eval_conv is the fusion spandrel computes; running it alone gives srkd's output
    fused = build_from_spec(spec).eval()
    fused.load_state_dict(sd, strict=True)
    x = torch.rand(1, 3, 11, 9)
    with torch.no_grad():
        assert torch.equal(model(x), fused(x))


def test_span_reparameterisation_is_exact_in_float_terms():
    torch.manual_seed(1)
    model = build_from_spec("span:n_feats=8,scale=2")
    x = torch.rand(2, 3, 10, 13)
    with torch.no_grad():
        train_out = model.train()(x)
        eval_out = model.eval()(x)
    assert float((train_out - eval_out).abs().max()) < 1e-4


def test_deployed_span_expands_exactly(tmp_path):
    """A file with only the fused eval_conv tensors (NTIRE 2024 releases) converts without change."""
    torch.manual_seed(2)
    model = build_from_spec("span:n_feats=8,scale=4").eval()
    deployed = {k: v for k, v in model.state_dict().items() if not any(t in k for t in (".sk.", ".conv."))}
    assert not any(".sk." in k for k in deployed) and "conv_1.eval_conv.weight" in deployed
    converted, fmt = convert_state_dict(deployed)
    assert fmt == "span-deployed" and converted.config() == model.config()
    x = torch.rand(1, 3, 12, 12)
    with torch.no_grad():
        torch.testing.assert_close(converted(x), model(x), rtol=0, atol=1e-6)
    for k, v in deployed.items():  # the fused kernels come back bit for bit
        assert torch.equal(converted.state_dict()[k], v), k


# ----------------------------------------------------------------------------- every architecture


def test_every_spec_is_complete():
    for name, spec in ARCHS.items():
        assert spec.cls.arch == name and spec.families and spec.formats and spec.examples and spec.reference
        assert spec.slicing is not None or spec.no_slicing, f"{name}: say why it cannot be channel-split"
        assert spec.context in ("local", "global") and spec.upsampler


@pytest.mark.parametrize("spec", EXAMPLES)
def test_round_trip_is_identical(spec, tmp_path):
    torch.manual_seed(0)
    model = build_from_spec(spec).eval()
    x = torch.rand(1, 3, 20, 17)  # ESA blocks need at least 15 px
    path = save_model(model, tmp_path / "m.safetensors", provenance={"method": "test"})
    loaded = load_model_file(path)
    assert loaded.model.config() == model.config() and loaded.model.arch == model.arch
    with torch.no_grad():
        ref, out = model(x), loaded.model(x)
    assert out.shape == (1, 3, 20 * model.scale, 17 * model.scale)
    assert torch.equal(ref, out)


@pytest.mark.parametrize("spec", EXAMPLES)
def test_state_dict_is_detected_as_itself(spec):
    torch.manual_seed(0)
    model = build_from_spec(spec)
    arch, config, _, _ = detect(model.state_dict())
    assert arch == model.arch
    rebuilt = build_model(arch, **config)
    assert shapes(rebuilt) == shapes(model)


@pytest.mark.parametrize("spec", EXAMPLES)
def test_feature_taps_are_tensors_at_increasing_depth(spec):
    model = build_from_spec(spec).eval()
    taps = describe(model).feature_taps
    assert list(taps) == ["body1", "body2", "body3"]
    modules = dict(model.named_modules())
    order = {name: i for i, name in enumerate(modules)}
    seen = {}
    hooks = [modules[p].register_forward_hook(lambda m, i, o, k=k: seen.__setitem__(k, o)) for k, p in taps.items()]
    with torch.no_grad():
        model(torch.rand(1, 3, 20, 17))
    for h in hooks:
        h.remove()
    m = describe(model).pad_multiple  # SwinIR pads to its window grid
    assert all(isinstance(seen[k], torch.Tensor) and seen[k].shape[-2:] == (-(-20 // m) * m, -(-17 // m) * m) for k in taps)
    assert order[taps["body1"]] <= order[taps["body2"]] < order[taps["body3"]]  # equal only for 2-stage bodies


@pytest.mark.parametrize("spec", [s for s in EXAMPLES if ARCHS[s.split(":")[0]].slicing is not None])
def test_slicing_gives_the_narrow_architecture(spec):
    from srkd.compress import extract_student
    from srkd.compress.slim import slim_forward

    torch.manual_seed(0)
    model = build_from_spec(spec).eval()
    width = 0.5
    student = extract_student(model, width)
    assert student.arch == model.arch and shapes(student) == shapes(build_model(model.arch, **student.config()))
    x = torch.rand(1, 3, 20, 17)
    with torch.no_grad():
        torch.testing.assert_close(student(x), slim_forward(model, x, width), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(slim_forward(model, x, 1.0), model(x))


def test_rcan_taps_follow_fakd():
    """FAKD taps group_id 2 and 6 of 10 (model/rcan.py); the same 1/3, 2/3 rule for other depths."""
    with torch.device("meta"):
        assert build_from_spec("rcan-x4").feature_taps == {"body1": "body.2", "body2": "body.6", "body3": "body.10"}
        assert build_from_spec("rcan:n_resgroups=6,scale=4").feature_taps == {"body1": "body.1", "body2": "body.4",
                                                                             "body3": "body.6"}
        assert build_from_spec("edsr-baseline-x4").feature_taps == {"body1": "body.4", "body2": "body.9",
                                                                   "body3": "body.16"}


# ----------------------------------------------------------------------------- consumers


def test_fakd_distils_an_imdn_teacher_into_a_span_student(tmp_path):
    torch.manual_seed(0)
    teacher = save_model(build_from_spec("imdn:n_feats=16,n_blocks=2,scale=2"), tmp_path / "imdn.safetensors")
    data = tmp_path / "data"
    data.mkdir()
    bundled = Path(__file__).resolve().parent.parent / "srkd" / "assets" / "train" / "T91"
    for name in ("t46.png", "tt1.png"):
        shutil.copy(bundled / name, data / name)
    out = tmp_path / "run"
    code, _, stderr = run_cli("distill", "--method", "fakd", "--teacher", str(teacher), "--student", "span:n_feats=8",
                              "--data", str(data), "--out", str(out), "--steps", "2", "--batch", "2", "--patch", "16",
                              "--val", "set5", "--threads", "1", "--quiet")
    assert code == 0, stderr
    student = load_model_file(out / "model.safetensors")
    assert student.model.arch == "span" and student.model.scale == 2


def test_models_lists_every_architecture():
    code, out, _ = run_cli("models", "--json")
    assert code == 0
    import json

    rows = json.loads(out)
    assert {r["arch"] for r in rows} == set(ARCHS)
    span = next(r for r in rows if r["preset"] == "span-x4")
    assert 400_000 < span["params"] < 450_000  # SPAN x4 48 ch: 0.41 M trainable (spandrel counts the same)


@pytest.mark.parametrize("spec", EXAMPLES)
def test_tiled_equals_whole_image(spec):
    """Exact tiling for every architecture: traced padding, RCAN's pools and ESA maps synchronised."""
    from srkd.infer import Upscaler, plan_tiles

    torch.manual_seed(0)
    model = build_from_spec(spec).eval()
    x = torch.rand(1, 3, 70, 83)
    ref = Upscaler(model, precision="fp32", tile=None).process(x)
    up = Upscaler(model, precision="fp32", tile=29, tile_pad=16)
    assert len(plan_tiles(70, 83, 29, up.tile_pad)) > 4
    out = up.process(x)
    assert float((out - ref).abs().max()) * 255 < 1.0, spec


def test_esa_sync_makes_ntire_rlfn_tiling_exact():
    """Without the sync an ESA model's tiles differ by up to ~20 levels whatever the padding."""
    from srkd.infer import Upscaler

    model = convert_state_dict(read_state_dict(data_path("weights", "NTIRE_ESR", "rlfn_ntire2024_baseline.pth")))[0]
    import cv2
    import numpy as np

    img = cv2.imread(str(data_path("benchmarks", "Urban100", "HR", "img_004.png")))[:120, :150, ::-1]
    x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float() / 255
    ref = Upscaler(model, precision="fp32", tile=None).process(x)
    up = Upscaler(model, precision="fp32", tile=48, tile_pad=24)
    assert float((up.process(x) - ref).abs().max()) * 255 < 0.01
    up._esa_sync = None  # the naive tiling, for contrast
    assert float((up.process(x) - ref).abs().max()) * 255 > 1.0


@pytest.mark.parametrize("arch", [a for a in ARCHS if a not in ("edsr", "carn", "carn-m", "rcan")])
def test_every_new_architecture_trains_as_a_teacher_and_upscales(arch, tmp_path):
    """srkd teacher-train, then srkd upscale (speed rewrites on, checked against fp32)."""
    import numpy as np
    from PIL import Image

    from srkd.infer import Upscaler

    images = tmp_path / "img"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (48, 56, 3), dtype=np.uint8)).save(images / f"{i}.png")
    spec = next(s for s in ARCHS[arch].examples)
    run = tmp_path / "run"
    code, _, err = run_cli("teacher-train", "--arch", spec.split(",scale=")[0], "--scale", "2", "--data", str(images),
                           "--val", "none", "--steps", "2", "--batch", "2", "--patch", "16", "--precision", "fp32",
                           "--threads", "1", "--out", str(run), "--quiet")
    assert code == 0, err
    model = load_model_file(run / "model.safetensors").model
    assert model.arch == arch and model.scale == 2
    x = torch.rand(1, 3, 30, 26)
    fast = Upscaler(model, device="cpu", precision="fp32").process(x)
    with torch.no_grad():
        plain = model.eval()(x).clamp(0, 1)
    assert float((fast - plain).abs().max()) * 255 < 0.5
    code, _, err = run_cli("upscale", str(images / "0.png"), "--model", str(run / "model.safetensors"),
                           "-o", str(tmp_path / "up.png"), "-q")
    assert code == 0, err
    assert Image.open(tmp_path / "up.png").size == (112, 96)


@pytest.mark.parametrize("spec", ["span:n_feats=16,scale=2", "rlfn:n_feats=16,mid_feats=20,scale=2"])
def test_compress_splits_span_and_rlfn(spec, tmp_path):
    torch.manual_seed(0)
    teacher = save_model(build_from_spec(spec), tmp_path / "t.safetensors")
    out = tmp_path / "s.safetensors"
    code, _, err = run_cli("compress", str(teacher), "--width", "0.5", "-o", str(out), "--no-eval", "--repeats", "0")
    assert code == 0, err
    student = load_model_file(out).model
    assert student.arch == spec.split(":")[0] and student.n_feats == 8


def test_compress_refuses_imdn_with_the_reason(tmp_path):
    teacher = save_model(build_from_spec("imdn:n_feats=16,n_blocks=2,scale=2"), tmp_path / "t.safetensors")
    code, _, err = run_cli("compress", str(teacher), "--width", "0.5", "-o", str(tmp_path / "s.safetensors"), "--no-eval")
    assert code == 2 and "cannot be channel-split" in err and "quarter" in err and len(err.strip().splitlines()) == 1


def test_auto_precision_picks_fp32_for_a_model_marked_lossy_in_bf16(monkeypatch):
    import dataclasses

    from srkd.infer import Upscaler
    from srkd.models import imdn

    monkeypatch.setattr(imdn.IMDN, "spec", imdn.IMDN.spec)  # restored after the test
    lossy = dataclasses.replace(ARCHS["imdn"], bf16_delta_db={"imdn-ntire-x4": -0.2})
    monkeypatch.setitem(ARCHS, "imdn", lossy)
    model = build_from_spec("imdn:n_feats=8,n_blocks=1,scale=2")
    assert not describe(model).supports_bf16
    with pytest.warns(UserWarning, match="loses more than 0.05 dB in bf16") if _native_bf16() else contextlib.nullcontext():
        up = Upscaler(model, device="cpu", precision="auto", cache=False)
    assert up.precision == "fp32"


def _native_bf16() -> bool:
    from srkd.infer import cpu_native_bf16

    return cpu_native_bf16()


# Published x4 numbers (Y channel) beside ours: IMDN from the ASSL paper's tables (landscape.md
# 4.2); RFDN's paper table as quoted there (marked unverified); the NTIRE files are challenge
# configurations, not the papers' checkpoints (docs/results.md explains the gaps).
NTIRE_TABLE = {  # Set5, Set14, B100, Urban100 PSNR measured with srkd eval (protocol of ecosystem.md A)
    "imdn_baseline.pth": (32.2468, 28.6907, 27.6347, 26.2362),
    "rfdn_baseline.pth": (32.1589, 28.6451, 27.6062, 26.1531),
    "rlfn_ntire2024_baseline.pth": (32.0974, 28.5980, 27.5773, 26.1040),
}


@pytest.mark.parametrize("name", NTIRE_TABLE)
def test_ntire_eval_table_is_reproduced(name):
    from srkd.evaluate import evaluate

    model = convert_state_dict(read_state_dict(data_path("weights", "NTIRE_ESR", name)))[0]
    results = evaluate(model, ["set5", "set14", "b100", "urban100"], data_root=data_path(), precision="fp32",
                       progress=False)
    got = tuple(r.psnr for r in results)
    assert all(abs(a - b) < 0.01 for a, b in zip(got, NTIRE_TABLE[name])), (name, got)


def test_swinir_parameter_counts_and_spandrel_detection():
    """SwinIR-M x4 has 11.9 M parameters, SwinIR-S x2 0.91 M (SwinIR paper); spandrel's SwinIRArch
    reads window size, img_size, depths, heads and the upsampler back from the same keys."""
    with torch.device("meta"):
        m, s = build_from_spec("swinir-x4"), build_from_spec("swinir-light-x2")
    assert round(sum(p.numel() for p in m.parameters()) / 1e6, 1) == 11.9
    assert round(sum(p.numel() for p in s.parameters()) / 1e6, 2) == 0.91
    sd = {k: v for k, v in s.state_dict().items()}
    ws = math.isqrt(sd["layers.0.residual_group.blocks.0.attn.relative_position_index"].shape[0])
    img = math.isqrt(sd["layers.0.residual_group.blocks.1.attn_mask"].shape[0]) * ws
    assert (ws, img) == (8, 64) and "upsample.0.weight" in sd and "conv_before_upsample.0.weight" not in sd
    arch, config, _, _ = detect(sd)
    assert arch == "swinir" and config["upsampler"] == "pixelshuffledirect" and config["depths"] == [6] * 4


def test_swinir_pads_to_its_window_and_any_size_runs():
    torch.manual_seed(0)
    model = build_from_spec(EXAMPLES_BY_ARCH["swinir"][0]).eval()
    with torch.no_grad():
        for h, w in ((16, 16), (13, 21), (5, 9)):
            assert model(torch.rand(1, 3, h, w)).shape == (1, 3, 2 * h, 2 * w)


def test_swinir_tiles_on_the_window_grid():
    from srkd.infer import plan_tiles

    for t in plan_tiles(100, 77, 30, 32, align=8):
        assert t.window[0] % 8 == 0 and t.window[2] % 8 == 0
        assert t.window[0] <= max(t.core[0] - 32, 0) and t.window[1] >= min(t.core[1] + 32, 100)


def _unscaled(spec: str) -> str:
    import re

    return re.sub(r",?scale=\d+", "", spec).replace(":,", ":").rstrip(":")


@pytest.fixture(scope="module")
def distill_data(tmp_path_factory):
    data = tmp_path_factory.mktemp("distill-data")
    bundled = Path(__file__).resolve().parent.parent / "srkd" / "assets" / "train" / "T91"
    for name in ("t46.png", "tt1.png"):
        shutil.copy(bundled / name, data / name)
    return data


@pytest.mark.parametrize("arch", list(ARCHS))
def test_every_architecture_distils_as_student_and_as_teacher(arch, distill_data, tmp_path):
    """FitNet (feature taps + adapters) into each architecture, FAKD from each architecture."""
    torch.manual_seed(0)
    example = _unscaled(ARCHS[arch].examples[0])
    edsr = save_model(build_from_spec("edsr:n_resblocks=2,n_feats=8,scale=2"), tmp_path / "edsr.safetensors")
    arch_name, config = _parsed(example, 2)
    other = save_model(build_model(arch_name, **config), tmp_path / "other.safetensors")
    for method, teacher, student in (("fitnet", edsr, example), ("fakd", other, "edsr:n_resblocks=2,n_feats=8")):
        out = tmp_path / method
        code, _, err = run_cli("distill", "--method", method, "--teacher", str(teacher), "--student", student,
                               "--data", str(distill_data), "--out", str(out), "--steps", "1", "--batch", "2",
                               "--patch", "16", "--val", "none", "--threads", "1", "--quiet")
        assert code == 0, (method, err)
        assert load_model_file(out / "model.safetensors").model.scale == 2


def _parsed(spec: str, scale: int):
    from srkd.models import parse_spec

    arch, config = parse_spec(spec)
    return arch, {**config, "scale": scale}


def test_too_small_an_image_for_esa_is_one_clear_error(tmp_path):
    from PIL import Image

    model = save_model(build_from_spec("rfdn:n_feats=8,n_blocks=1,scale=2"), tmp_path / "rfdn.safetensors")
    Image.new("RGB", (12, 20)).save(tmp_path / "small.png")
    code, _, err = run_cli("upscale", str(tmp_path / "small.png"), "--model", str(model), "-o", str(tmp_path / "o.png"))
    assert code == 1 and "needs at least 15 px" in err and len(err.strip().splitlines()) == 1  # 1: an image failed
    assert not (tmp_path / "o.png").exists()
