"""Export a model to ONNX, OpenVINO IR, a ``torch.export`` ExportedProgram or TorchScript.

Every export

* has dynamic batch, height and width (checked: the file runs at two input sizes);
* carries the model's architecture, configuration, scale, provenance and srkd's version in the
  file's own metadata (ONNX ``metadata_props``, OpenVINO ``rt_info``, an ``srkd.json`` extra file
  in ExportedProgram and TorchScript archives);
* is checked in its runtime against srkd's fp32 torch output on a real image crop: the largest
  difference in 8-bit levels and the PSNR between the two are reported, and an fp32 export that
  differs by more than one level is refused (nothing is written);
* is written to a temporary name and renamed, and never replaces a file without ``overwrite``.

Before exporting, the network is put in its deployed form: re-parameterised blocks (SPAN) run
their fused convolution. ``pixel_shuffle="conv-transpose"`` replaces every PixelShuffle by the
exactly equal fixed-weight ``ConvTranspose2d(stride=r)``, for delegates that reject the rank-6
reshapes PixelShuffle lowers to.

ONNX goes through PyTorch's dynamo exporter (``torch.onnx.export(dynamo=True)``, opset 18); if it
fails, the TorchScript-based exporter is used and the report says so. OpenVINO IR is converted
from that ONNX graph by ``openvino.convert_model``.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .errors import SrkdError
from .io.files import check_writable

FORMATS = {".onnx": "onnx", ".xml": "openvino", ".pt2": "exported-program", ".pt": "torchscript", ".ts": "torchscript"}
SUFFIX = {"onnx": ".onnx", "openvino": ".xml", "exported-program": ".pt2", "torchscript": ".pt"}
PRECISIONS = {"onnx": ("fp32", "fp16"), "openvino": ("fp32", "fp16"), "exported-program": ("fp32", "bf16", "fp16"),
              "torchscript": ("fp32", "bf16", "fp16")}
EXTRA = {"onnx": ("onnx", "onnxruntime"), "openvino": ("openvino", "onnx")}
MAX_FP32_LEVELS = 1.0


@dataclass
class ExportReport:
    path: Path
    format: str
    precision: str
    exporter: str
    seconds: float
    bytes: int
    max_diff_levels: float
    psnr_db: float
    sizes_checked: list = field(default_factory=list)
    rewrites: list = field(default_factory=list)

    def summary(self) -> str:
        psnr = "inf" if math.isinf(self.psnr_db) else f"{self.psnr_db:.1f}"
        rw = f", rewrites: {', '.join(self.rewrites)}" if self.rewrites else ""
        return (f"wrote {self.path} ({self.format}, {self.precision}, {self.exporter}, {self.bytes / 1e6:.2f} MB, "
                f"{self.seconds:.1f} s{rw}); parity on a real crop: max {self.max_diff_levels:.2f} levels, "
                f"{psnr} dB against srkd fp32, sizes {', '.join(f'{h}x{w}' for h, w in self.sizes_checked)}")


def resolve_format(output: Path, fmt: str | None) -> str:
    if fmt:
        f = fmt.strip().lower()
        if f not in SUFFIX:
            raise SrkdError(f"unknown export format '{fmt}': use one of {', '.join(SUFFIX)}")
        return f
    f = FORMATS.get(output.suffix.lower())
    if f is None:
        raise SrkdError(f"cannot tell the format from '{output.name}': use a suffix {', '.join(sorted(FORMATS))} or --format")
    return f


def require(fmt: str) -> None:
    """Raise an SrkdError naming the extra when a runtime for ``fmt`` is missing."""
    for module in EXTRA.get(fmt, ()):
        try:
            __import__(module)
        except ImportError:
            raise SrkdError(f"{fmt} export needs the '{module}' package: pip install 'srkd[deploy]'") from None


# ----------------------------------------------------------------------------- deployed network


class ShuffleAsConvTranspose(nn.Module):
    """PixelShuffle(r) as a fixed 0/1 ConvTranspose2d with stride r: the same numbers, exactly."""

    def __init__(self, r: int, channels: int):
        super().__init__()
        weight = torch.zeros(channels * r * r, channels, r, r)
        for c in range(channels):
            for i in range(r):
                for j in range(r):
                    weight[c * r * r + i * r + j, c, i, j] = 1.0
        self.r = r
        self.register_buffer("weight", weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.conv_transpose2d(x, self.weight.to(x.dtype), stride=self.r)


def deployed(model: nn.Module, pixel_shuffle: str = "keep") -> tuple[nn.Module, list[str]]:
    """A copy of ``model`` in its inference form (fp32, CPU, eval) and the rewrites applied."""
    if pixel_shuffle not in ("keep", "conv-transpose"):
        raise SrkdError(f"pixel_shuffle must be 'keep' or 'conv-transpose', got {pixel_shuffle!r}")
    net = copy.deepcopy(model).float().cpu().eval().requires_grad_(False)
    rewrites = []
    fused = [m for m in net.modules() if hasattr(m, "deploy")]
    for m in fused:
        m.deploy()
    if fused:
        rewrites.append(f"{len(fused)} re-parameterised convs fused")
    if pixel_shuffle == "conv-transpose":
        n = 0
        for parent in list(net.modules()):
            for name, child in list(parent.named_children()):
                if isinstance(child, nn.PixelShuffle):
                    channels = _channels_before(parent, name)
                    setattr(parent, name, ShuffleAsConvTranspose(child.upscale_factor, channels))
                    n += 1
        rewrites.append(f"{n} PixelShuffle -> ConvTranspose2d")
    return net, rewrites


def _channels_before(parent: nn.Module, name: str) -> int:
    """Output channels of the convolution just before ``parent.name`` divided by r*r."""
    children = list(parent.named_children())
    idx = [n for n, _ in children].index(name)
    r = children[idx][1].upscale_factor
    for _, prev in reversed(children[:idx]):
        if isinstance(prev, nn.Conv2d):
            return prev.out_channels // (r * r)
    raise SrkdError(f"cannot rewrite PixelShuffle '{name}': no convolution before it in its container")


def metadata(model: nn.Module, provenance: dict | None) -> dict[str, str]:
    from . import __version__

    return {"srkd_version": __version__, "arch": str(getattr(model, "arch", type(model).__name__)),
            "scale": str(int(model.scale)), "config": json.dumps(model.config(), sort_keys=True),
            "provenance": json.dumps(provenance or {}, sort_keys=True), "input": "RGB float in [0, 1], NCHW",
            "output": "RGB float in [0, 1] (clamp before quantising), NCHW, scale x the input"}


# ----------------------------------------------------------------------------- runtimes


def load_runtime(path: Path, fmt: str, precision: str = "fp32"):
    """A callable ``f(x: torch.Tensor) -> torch.Tensor`` running the exported file in its runtime."""
    if fmt == "onnx":
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        dtype = session.get_inputs()[0].type

        def run(x):
            arr = x.numpy().astype("float16" if "float16" in dtype else "float32")
            return torch.from_numpy(session.run(None, {name: arr})[0]).float()

        return run
    if fmt == "openvino":
        import openvino as ov

        # OpenVINO's CPU plugin runs bf16 by default on CPUs with native bf16: ask for f32 explicitly.
        hint = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}[precision]
        compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": hint})

        def run(x):
            return torch.from_numpy(compiled(x.numpy())[0]).float()

        return run
    if fmt == "exported-program":
        program = torch.export.load(str(path)).module()

        def run(x):
            with torch.no_grad():
                return program(x.to(_param_dtype(program))).float()

        return run
    if fmt == "torchscript":
        module = torch.jit.load(str(path), map_location="cpu").eval()

        def run(x):
            with torch.no_grad():
                return module(x.to(_param_dtype(module))).float()

        return run
    raise SrkdError(f"no runtime for format '{fmt}'")


def _param_dtype(module) -> torch.dtype:
    for p in module.parameters():
        return p.dtype
    for b in module.buffers():
        if b.is_floating_point():
            return b.dtype
    return torch.float32


def read_metadata(path: Path, fmt: str) -> dict[str, str]:
    """The srkd metadata stored in an exported file."""
    if fmt == "onnx":
        import onnx

        return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    if fmt == "openvino":
        import openvino as ov

        model = ov.Core().read_model(str(path))
        info = model.get_rt_info()
        return {k: str(model.get_rt_info(["srkd", k]).astype(str)) for k in _srkd_keys(info)}
    extra = {"srkd.json": ""}
    if fmt == "exported-program":
        torch.export.load(str(path), extra_files=extra)
    else:
        torch.jit.load(str(path), _extra_files=extra, map_location="cpu")
    return json.loads(extra["srkd.json"] or "{}")


def _srkd_keys(info) -> list[str]:
    node = info["srkd"]
    try:
        return list(node.astype(dict).keys())
    except Exception:  # noqa: BLE001 - older OpenVINO rt_info APIs
        return [k for k in ("srkd_version", "arch", "scale", "config", "provenance", "input", "output")]


# ----------------------------------------------------------------------------- export


def _dims():
    # AUTO: torch.export infers each dimension's range (ESA needs >= 15 px, SwinIR pads to its
    # window) instead of failing on a range we would have to guess per architecture.
    auto = torch.export.Dim.AUTO
    return {"x": {0: auto, 2: auto, 3: auto}}


def _to_onnx(net: nn.Module, x: torch.Tensor, path: Path, precision: str, meta: dict) -> str:
    import onnx

    exporter = "dynamo (torch.onnx.export dynamo=True, opset 18)"
    sink = io.StringIO()
    try:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink), _quiet_warnings():
            torch.onnx.export(net, (x,), str(path), dynamo=True, opset_version=18, dynamic_shapes=_dims(),
                              input_names=["input"], output_names=["output"], external_data=False)
    except Exception:  # noqa: BLE001 - any dynamo failure: try the TorchScript-based exporter
        exporter = "TorchScript-based (torch.onnx.export dynamo=False, opset 17)"
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink), _quiet_warnings():
            torch.onnx.export(net, (x,), str(path), dynamo=False, opset_version=17, input_names=["input"],
                              output_names=["output"],
                              dynamic_axes={"input": {0: "batch", 2: "height", 3: "width"},
                                            "output": {0: "batch", 2: "height", 3: "width"}})
    model = onnx.load(str(path))
    del model.metadata_props[:]
    for k, v in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v
    onnx.save(model, str(path))
    return exporter


@contextlib.contextmanager
def _quiet_warnings():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def export_model(model_file, output, fmt: str | None = None, precision: str = "fp32", overwrite: bool = False,
                 pixel_shuffle: str = "keep", check: bool = True) -> ExportReport:
    """Export a loaded model file (or a module) to ``output``; see the module docstring."""
    output = Path(output)
    fmt = resolve_format(output, fmt)
    precision = str(precision).lower()
    if precision not in PRECISIONS[fmt]:
        raise SrkdError(f"{fmt} export supports {', '.join(PRECISIONS[fmt])}, not '{precision}'")
    require(fmt)
    check_writable(output, overwrite)
    if fmt == "openvino":
        check_writable(output.with_suffix(".bin"), overwrite)
    model = model_file if isinstance(model_file, nn.Module) else model_file.model
    provenance = {} if isinstance(model_file, nn.Module) else model_file.provenance
    net, rewrites = deployed(model, pixel_shuffle)
    meta = metadata(model, provenance)
    from .data.crops import real_image_crop

    x = torch.cat([real_image_crop(48), real_image_crop(48).flip(-1)])  # batch 2: batch 1 would be specialised
    start = time.perf_counter()
    tmpdir = Path(tempfile.mkdtemp(prefix=".srkd-export-", dir=output.parent if output.parent.exists() else None))
    try:
        tmp = tmpdir / f"model{SUFFIX[fmt]}"
        low = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
        if fmt == "onnx":
            exporter = _to_onnx(net.half() if low else net, x.half() if low else x, tmp, precision, meta)
        elif fmt == "openvino":
            import openvino as ov

            onnx_tmp = tmpdir / "model.onnx"
            exporter = _to_onnx(net, x, onnx_tmp, "fp32", meta)
            ov_model = ov.convert_model(str(onnx_tmp))
            for k, v in meta.items():
                ov_model.set_rt_info(v, ["srkd", k])
            ov.save_model(ov_model, str(tmp), compress_to_fp16=precision == "fp16")
            onnx_tmp.unlink()
            exporter = "OpenVINO convert_model from the " + exporter + " ONNX graph"
        elif fmt == "exported-program":
            target = net.to(low) if low else net
            with _quiet_warnings():
                program = torch.export.export(target, (x.to(low) if low else x,), dynamic_shapes=_dims())
            torch.export.save(program, str(tmp), extra_files={"srkd.json": json.dumps(meta)})
            exporter = "torch.export (dynamic batch/height/width)"
        else:
            target = net.to(low) if low else net
            with _quiet_warnings(), torch.no_grad():
                module = torch.jit.trace(target, x.to(low) if low else x, check_trace=False)
            torch.jit.save(module, str(tmp), _extra_files={"srkd.json": json.dumps(meta)})
            exporter = "torch.jit.trace"
        seconds = time.perf_counter() - start
        report = ExportReport(output, fmt, precision, exporter, seconds, 0, 0.0, float("inf"), rewrites=rewrites)
        if check:
            _parity(report, tmp, fmt, precision, model)
        files = [(tmp, output)]
        if fmt == "openvino":
            files.append((tmp.with_suffix(".bin"), output.with_suffix(".bin")))
        output.parent.mkdir(parents=True, exist_ok=True)
        for src, dst in files:
            os.replace(src, dst)
        report.bytes = sum(dst.stat().st_size for _, dst in files)
        return report
    except SrkdError:
        raise
    except Exception as exc:  # noqa: BLE001 - exporter internals raise anything; say it in one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SrkdError(f"{fmt} export of this {getattr(model, 'arch', 'model')} failed: {first[:300]}") from None
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def _parity(report: ExportReport, path: Path, fmt: str, precision: str, model: nn.Module) -> None:
    """Run the exported file on two real crops (two sizes: dynamic shapes) against srkd fp32."""
    from .data.crops import psnr_float, real_image_crop

    run = load_runtime(path, fmt, precision)
    ref_net = copy.deepcopy(model).float().cpu().eval()
    worst, psnr = 0.0, float("inf")
    for size, batch in ((48, 1), (40, 3)):
        x = real_image_crop(size)[:, :, :, : size - 5].repeat(batch, 1, 1, 1)  # not square, not a multiple of 8
        with torch.no_grad():
            ref = ref_net(x).clamp(0, 1)
        got = run(x).clamp(0, 1)
        if got.shape != ref.shape:
            raise SrkdError(f"the exported {fmt} file returned {tuple(got.shape)} for a {tuple(x.shape)} input, "
                            f"expected {tuple(ref.shape)}: its shapes are not dynamic")
        worst = max(worst, float((got - ref).abs().max()) * 255)
        psnr = min(psnr, psnr_float(got, ref))
        report.sizes_checked.append((x.shape[-2], x.shape[-1]))
    report.max_diff_levels, report.psnr_db = worst, psnr
    if precision == "fp32" and worst > MAX_FP32_LEVELS:
        raise SrkdError(f"the exported {fmt} file differs from srkd's fp32 output by {worst:.2f} levels "
                        f"(more than {MAX_FP32_LEVELS:g}); nothing was written")
