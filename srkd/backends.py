"""Inference backends for srkd.infer.Upscaler: torch, onnxruntime, OpenVINO, and ``auto``.

A non-torch backend runs the model exported by :mod:`srkd.export` (parity-checked once), built on
first use and cached by the weights' hash in ``$SRKD_CACHE/export``. Tiles are still cut in host
memory by the Upscaler, so tiling, alpha, 16-bit and EXIF handling are the torch path's.

``auto`` picks, among the backends installed, the fastest whose output on a real image crop is
finite and within ``AUTO_MAX_LOSS_DB`` of fp32's PSNR against the crop's ground truth (the HR
crop, its LR made with MATLAB bicubic). The choice is cached per weights, srkd, torch and
machine (:mod:`srkd.decisions`). Models with global context (RCAN's pools, ESA) need the torch
path's synchronised tiling, so ``auto`` keeps them on torch.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from .data.crops import quality_crop
from .errors import SrkdError

BACKENDS = ("auto", "torch", "onnxruntime", "openvino")
# `srkd upscale` and srkd.upscale() default to auto: on the 2-core CPU of docs/export.md it matches
# the fastest peer (CARN-M x4 512x512, EDSR-baseline x4 256x256; benchmarks/upscale_peers.py), and without
# the [deploy] extra it is the torch path. SRKD_BACKEND pins another default (a server, a test).
DEFAULT_BACKEND = "auto"
BACKEND_ENV = "SRKD_BACKEND"
AUTO_MAX_LOSS_DB = 0.02
_FORMAT = {"onnxruntime": "onnx", "openvino": "openvino"}
_MODULE = {"onnxruntime": "onnxruntime", "openvino": "openvino"}


def check_backend(name: str) -> str:
    b = str(name).strip().lower()
    if b not in BACKENDS:
        raise SrkdError(f"unknown backend '{name}': use one of {', '.join(BACKENDS)}")
    return b


def default_backend() -> str:
    """The backend used when none is given: ``$SRKD_BACKEND`` or ``auto``."""
    value = os.environ.get(BACKEND_ENV, "").strip()
    if not value:
        return DEFAULT_BACKEND
    try:
        return check_backend(value)
    except SrkdError:
        raise SrkdError(f"{BACKEND_ENV}={value!r} is not a backend: use one of {', '.join(BACKENDS)}") from None


def installed(backend: str) -> bool:
    try:
        __import__(_MODULE[backend])
        __import__("onnx")
    except ImportError:
        return False
    return True


def require(backend: str) -> None:
    if backend in _MODULE and not installed(backend):
        raise SrkdError(f"--backend {backend} needs the optional runtimes: pip install 'srkd[deploy]'")


def exported_file(model: nn.Module, backend: str) -> Path:
    """The model's exported file for ``backend``, made (and parity-checked) on first use."""
    from .data.benchmarks import cache_root
    from .decisions import weights_hash
    from .export import SUFFIX, export_model

    fmt = _FORMAT[backend]
    path = cache_root() / "export" / f"{getattr(model, 'arch', 'model')}-{weights_hash(model)[:24]}{SUFFIX[fmt]}"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        export_model(model, path, fmt=fmt, overwrite=True)
    return path


def runtime(model: nn.Module, backend: str, precision: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """``f(x) -> y`` on host float tensors, running ``model`` exported for ``backend``."""
    from .export import load_runtime

    require(backend)
    return load_runtime(exported_file(model, backend), _FORMAT[backend], precision)


def _psnr_y(sr: torch.Tensor, hr: torch.Tensor, shave: int) -> float:
    import numpy as np

    from .metrics import psnr

    def u8(t):
        return t[0].clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).numpy()

    return float(psnr(np.ascontiguousarray(u8(sr)), np.ascontiguousarray(u8(hr)), shave))


def choose(model: nn.Module, torch_forward: Callable, torch_precision: str,
           scale: int, requested: str = "auto") -> tuple[str, str, Callable | None, str]:
    """(backend, precision, its runtime or None for torch, why) for ``auto``: the fastest candidate
    within AUTO_MAX_LOSS_DB of fp32. The winner's runtime is returned so it is not loaded twice.

    ``torch_precision`` is what the torch path resolved; an explicit fp32 or bf16 request keeps
    the runtimes to that precision too (``--precision fp32 --backend auto`` never runs bf16)."""
    from .precision import cpu_native_bf16

    lr, hr = quality_crop(scale)
    net = model.float().eval()
    with torch.no_grad():
        ref = _psnr_y(net(lr), hr, scale)
    candidates: list[tuple[str, str, Callable]] = [("torch", torch_precision, torch_forward)]
    for backend in ("openvino", "onnxruntime"):
        if not installed(backend):
            continue
        precisions = ["bf16", "fp32"] if backend == "openvino" and cpu_native_bf16() else ["fp32"]
        if requested in ("fp32", "bf16"):
            precisions = [p for p in precisions if p == requested]
        for p in precisions:
            try:
                candidates.append((backend, p, runtime(model, backend, p)))
            except SrkdError:
                continue  # an export that fails its parity check is not a candidate
    best, why = None, []
    # Time on a 256x256 input (the crop tiled): the ranking at tile or image size, not at 48 px,
    # where fixed per-call costs dominate.
    big = lr.repeat(1, 1, 6, 6)[:, :, :256, :256].contiguous()
    for backend, p, fn in candidates:
        out = fn(lr)
        if not torch.isfinite(out).all():
            why.append(f"{backend} {p}: non-finite output")
            continue
        loss = ref - _psnr_y(out, hr, scale)
        if loss > AUTO_MAX_LOSS_DB:
            why.append(f"{backend} {p}: {loss:.3f} dB below fp32")
            continue
        fn(big)
        seconds = float("inf")
        for _ in range(2):
            t0 = time.perf_counter()
            fn(big)
            seconds = min(seconds, time.perf_counter() - t0)
        if best is None or seconds < best[2]:
            best = (backend, p, seconds)
    backend, p, _ = best
    fn = next(f for b, q, f in candidates if (b, q) == (backend, p))
    return backend, p, (None if backend == "torch" else fn), "; ".join(why)


def setup(up, backend: str, model: nn.Module, requested: str, cache: bool) -> str:
    """Resolve ``backend`` for the Upscaler ``up``; a non-torch one replaces its network call only.

    Returns the backend that runs; sets ``up._runtime`` and ``up.precision`` for a runtime.
    """
    import copy

    from . import decisions

    backend = check_backend(backend)
    if backend == "torch":
        return backend
    if up.device.type != "cpu":
        raise SrkdError(f"--backend {backend} runs on the CPU here; use --device cpu or --backend torch")
    if backend == "auto":
        if up.global_context:
            return "torch"  # synchronised tiling (pools, ESA) exists on the torch path only
        if not any(installed(b) for b in ("openvino", "onnxruntime")):
            return "torch"  # nothing to choose between without the [deploy] extra
        key = decisions.key(model, up.device, f"backend-v2:{requested}") if cache else None
        known = decisions.load(key) if key else None
        if known and known.get("backend") in BACKENDS and (known["backend"] == "torch" or installed(known["backend"])):
            chosen, precision = known["backend"], known["precision"]
        else:
            t0 = time.perf_counter()
            chosen, precision, up._runtime, _ = choose(
                copy.deepcopy(model), lambda x: up._run_batch(x), up.precision, up.scale, requested)
            up.info.append(f"backend auto: {chosen} {precision} is the fastest within "
                             f"{AUTO_MAX_LOSS_DB} dB of fp32 for this model (chosen once in "
                             f"{time.perf_counter() - t0:.1f} s, then cached; --backend torch skips it)")
            if key:
                decisions.store(key, {"backend": chosen, "precision": precision})
        if chosen == "torch":
            return "torch"
        backend = chosen
    else:
        require(backend)
        precision = requested if requested in ("fp32", "bf16") and backend == "openvino" else "fp32"
        if up.global_context:
            up.tile_mode = None  # a runtime cannot synchronise pools or ESA maps across tiles
            up._note(f"{backend} runs this global-context model on whole images (exact tiling needs --backend torch)")
    if up._runtime is None:  # not already loaded by choose
        up._runtime = runtime(copy.deepcopy(model).float().cpu().eval(), backend, precision)
    up.precision = precision
    return backend
