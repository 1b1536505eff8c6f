"""``srkd export``: every architecture in every format runs in its runtime within one 8-bit level
of srkd's fp32 output, at two input sizes and batch sizes (dynamic shapes), with its metadata;
bad input is one line and exit 2, with nothing written."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from conftest import run_cli

from srkd.errors import SrkdError
from srkd.export import ShuffleAsConvTranspose, export_model, load_runtime, read_metadata
from srkd.io.checkpoint import save_model
from srkd.models import ARCHS, build_from_spec

pytest.importorskip("onnxruntime", reason="the [deploy] extra is not installed")
pytest.importorskip("openvino", reason="the [deploy] extra is not installed")

FORMATS = {"onnx": ".onnx", "openvino": ".xml", "exported-program": ".pt2", "torchscript": ".pt"}
#: known gaps, each with the reason the export refuses (tests/test_export.py checks the message)
UNSUPPORTED: dict = {}  # none left: SwinIR exports as a program since its window branch was made export-safe


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("arch", list(ARCHS))
def test_every_architecture_exports_with_parity(arch, fmt, tmp_path):
    torch.manual_seed(0)
    model = build_from_spec(ARCHS[arch].examples[0]).eval()
    out = tmp_path / f"m{FORMATS[fmt]}"
    if (arch, fmt) in UNSUPPORTED:
        with pytest.raises(SrkdError, match=UNSUPPORTED[(arch, fmt)]):
            export_model(model, out)
        assert not out.exists() and not list(tmp_path.iterdir())
        return
    report = export_model(model, out)
    assert report.max_diff_levels <= 1.0 and report.psnr_db > 60
    assert len(report.sizes_checked) == 2 and out.exists()
    meta = read_metadata(out, fmt)
    assert meta["arch"] == arch and int(meta["scale"]) == model.scale
    assert json.loads(meta["config"]) == json.loads(json.dumps(model.config()))
    # the file itself, outside the parity check: a third size and batch
    run = load_runtime(out, fmt)
    x = torch.rand(2, 3, 33, 26)
    with torch.no_grad():
        ref = model(x)
    assert float((run(x).clamp(0, 1) - ref.clamp(0, 1)).abs().max()) * 255 <= 1.0
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".srkd-export-")]  # no temporary left


def test_pixel_shuffle_rewrite_is_exact():
    torch.manual_seed(0)
    x = torch.randn(2, 3 * 9, 5, 7)
    assert torch.equal(ShuffleAsConvTranspose(3, 3)(x), torch.nn.functional.pixel_shuffle(x, 3))
    model = build_from_spec("edsr:n_resblocks=1,n_feats=8,scale=4").eval()
    from srkd.export import deployed

    net, rewrites = deployed(model, "conv-transpose")
    assert not any(isinstance(m, torch.nn.PixelShuffle) for m in net.modules()) and "2 PixelShuffle" in rewrites[0]
    y = torch.rand(1, 3, 9, 11)
    with torch.no_grad():
        torch.testing.assert_close(net(y), model(y), rtol=0, atol=1e-6)


def test_cli_export_and_its_errors(tmp_path):
    torch.manual_seed(0)
    model = save_model(build_from_spec("edsr:n_resblocks=1,n_feats=8,scale=2"), tmp_path / "m.safetensors",
                       provenance={"method": "test"})
    out = tmp_path / "m.onnx"
    code, stdout, stderr = run_cli("export", str(model), "-o", str(out), "--no-pixel-shuffle")
    assert code == 0, stderr
    assert "levels" in stdout and "PixelShuffle -> ConvTranspose2d" in stdout
    assert json.loads(read_metadata(out, "onnx")["provenance"]) == {"method": "test"}
    for args, message in (
        (["-o", str(out)], "already exists; pass --overwrite"),
        (["-o", str(tmp_path / "m.tflite")], "cannot tell the format"),
        (["-o", str(tmp_path / "x.bin"), "--format", "tflite"], "unknown export format 'tflite'"),
        (["-o", str(tmp_path / "x.onnx"), "--precision", "bf16"], "onnx export supports fp32, fp16"),
    ):
        code, _, stderr = run_cli("export", str(model), *args)
        assert code == 2 and message in stderr and len(stderr.strip().splitlines()) == 1, (args, stderr)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.safetensors"]


def test_missing_runtime_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino now raises ImportError
    model = save_model(build_from_spec("edsr:n_resblocks=1,n_feats=8,scale=2"), tmp_path / "m.safetensors")
    code, _, stderr = run_cli("export", str(model), "-o", str(tmp_path / "m.xml"))
    assert code == 2 and "pip install 'srkd[deploy]'" in stderr and len(stderr.strip().splitlines()) == 1
    assert not (tmp_path / "m.xml").exists()


def test_fp32_parity_failure_writes_nothing(tmp_path, monkeypatch):
    import srkd.export as ex

    real = ex.load_runtime
    monkeypatch.setattr(ex, "load_runtime", lambda *a, **k: (lambda x, run=real(*a, **k): run(x) + 0.05))
    model = build_from_spec("edsr:n_resblocks=1,n_feats=8,scale=2").eval()
    with pytest.raises(SrkdError, match="differs from srkd's fp32 output by .* levels"):
        export_model(model, tmp_path / "m.onnx")
    assert not list(tmp_path.iterdir())
