"""``--backend onnxruntime|openvino|auto``: the exported graph runs the Upscaler's exact tiling."""

from __future__ import annotations

import sys

import pytest
import torch
from conftest import run_cli

from srkd.infer import Upscaler
from srkd.io.checkpoint import save_model
from srkd.models import build_from_spec

pytest.importorskip("onnxruntime", reason="the [deploy] extra is not installed")
pytest.importorskip("openvino", reason="the [deploy] extra is not installed")


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
@pytest.mark.parametrize("spec", ["edsr:n_resblocks=2,n_feats=8,scale=2", "span:n_feats=8,scale=3"])
def test_runtime_backend_tiles_like_the_whole_image(backend, spec):
    torch.manual_seed(0)
    model = build_from_spec(spec).eval()
    x = torch.rand(1, 3, 70, 61)
    whole = Upscaler(model, precision="fp32", tile=None).process(x)
    up = Upscaler(model, precision="fp32", tile=24, backend=backend)
    assert up.backend == backend and up._runtime is not None
    out = up.process(x)
    assert float((out - whole).abs().max()) * 255 < 1.0
    again = Upscaler(model, precision="fp32", tile=None, backend=backend).process(x)  # the cached export
    assert float((again - whole).abs().max()) * 255 < 1.0


def test_global_context_model_runs_whole_on_a_runtime():
    torch.manual_seed(0)
    model = build_from_spec("rcan:n_resgroups=2,n_resblocks=1,n_feats=16,reduction=4,scale=2").eval()
    x = torch.rand(1, 3, 40, 36)
    whole = Upscaler(model, precision="fp32", tile=None).process(x)
    with pytest.warns(UserWarning, match="whole images"):
        up = Upscaler(model, precision="fp32", tile=16, backend="onnxruntime")
    assert up.tile_mode is None and float((up.process(x) - whole).abs().max()) * 255 < 1.0
    assert Upscaler(model, backend="auto", tile=16).backend == "torch"  # synchronised tiling stays on torch


def test_auto_picks_an_accurate_backend_and_remembers_it():
    from srkd import backends, decisions

    torch.manual_seed(0)
    model = build_from_spec("edsr:n_resblocks=2,n_feats=8,scale=2").eval()
    up = Upscaler(model, backend="auto")
    assert up.backend in ("torch", "onnxruntime", "openvino")
    lr, hr = backends.quality_crop(2)
    with torch.no_grad():
        ref = backends._psnr_y(model(lr), hr, 2)
    got = backends._psnr_y(up.process(lr), hr, 2)
    assert ref - got <= backends.AUTO_MAX_LOSS_DB + 1e-9
    key = decisions.key(model, up.device, "backend-v2:auto")
    assert decisions.load(key)["backend"] == up.backend


def test_backend_errors_are_one_line(tmp_path, monkeypatch):
    model = save_model(build_from_spec("edsr:n_resblocks=1,n_feats=8,scale=2"), tmp_path / "m.safetensors")
    src = tmp_path / "in.png"
    from PIL import Image

    Image.new("RGB", (20, 20)).save(src)
    code, _, err = run_cli("upscale", str(src), "--model", str(model), "-o", str(tmp_path / "o.png"), "--backend", "tflite")
    assert code == 2 and "unknown backend 'tflite'" in err and len(err.strip().splitlines()) == 1
    monkeypatch.setitem(sys.modules, "openvino", None)
    code, _, err = run_cli("upscale", str(src), "--model", str(model), "-o", str(tmp_path / "o.png"), "--backend", "openvino")
    assert code == 2 and "pip install 'srkd[deploy]'" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o.png").exists()


def test_default_backend_is_auto_and_the_environment_pins_it(monkeypatch):
    from srkd import backends
    from srkd.errors import SrkdError

    monkeypatch.delenv("SRKD_BACKEND", raising=False)
    assert backends.default_backend() == "auto"
    monkeypatch.setenv("SRKD_BACKEND", "OpenVINO")
    assert backends.default_backend() == "openvino"
    monkeypatch.setenv("SRKD_BACKEND", "tflite")
    with pytest.raises(SrkdError, match="SRKD_BACKEND='tflite' is not a backend"):
        backends.default_backend()


def test_upscale_command_defaults_to_auto_and_says_what_it_chose(tmp_path, monkeypatch):
    monkeypatch.delenv("SRKD_BACKEND", raising=False)
    torch.manual_seed(0)
    model = save_model(build_from_spec("edsr:n_resblocks=1,n_feats=8,scale=2"), tmp_path / "m.safetensors")
    src = tmp_path / "in.png"
    from PIL import Image

    Image.new("RGB", (20, 16), (90, 120, 30)).save(src)
    code, _, err = run_cli("upscale", str(src), "--model", str(model), "-o", str(tmp_path / "o.png"))
    assert code == 0, err
    assert "srkd: backend auto:" in err and "chosen once" in err
    code, _, err = run_cli("upscale", str(src), "--model", str(model), "-o", str(tmp_path / "o.png"), "--overwrite")
    assert code == 0 and "backend auto" not in err  # the choice is cached, nothing to say twice
    code, _, err = run_cli("upscale", str(src), "--model", str(model), "-o", str(tmp_path / "t.png"), "--backend", "torch")
    assert code == 0 and "backend auto" not in err


def test_auto_keeps_an_explicit_precision(monkeypatch):
    torch.manual_seed(0)
    model = build_from_spec("edsr:n_resblocks=1,n_feats=8,scale=2").eval()
    up = Upscaler(model, precision="fp32", backend="auto")
    assert up.precision == "fp32"  # never OpenVINO bf16 when fp32 was asked for


def test_auto_without_the_runtimes_is_the_torch_path(monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    model = build_from_spec("edsr:n_resblocks=1,n_feats=8,scale=2").eval()
    up = Upscaler(model, backend="auto")
    assert up.backend == "torch" and up.info == [] and up._runtime is None
