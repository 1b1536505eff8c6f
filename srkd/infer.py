"""Inference helper: device and precision choice, exact tiling, self-ensemble.

This module knows nothing about files or the command line (``srkd.upscale`` and ``srkd eval``
build on it). Stable API::

    up = Upscaler(model, device="auto", precision="auto", tile="auto", tile_pad=None,
                  batch_tiles="auto", channels_last=True, compile=False, fuse=True)
    sr = up.process(x, self_ensemble=False, progress=None, out_dtype=torch.float32)

``x`` is a float tensor (1, 3, h, w) with values in [0, 1] in host memory; ``sr`` is (1, 3, h*s, w*s)
in host memory, clamped to [0, 1] (or, with ``out_dtype=torch.uint8``, rounded to 0..255 on the
device). After construction ``up.device``, ``up.precision`` (``"fp32"|"bf16"|"fp16"``), ``up.tile``
(core size in LR px: an int for square cores, a (height, width) pair from the CPU planner, or
None for whole-image inference), ``up.tile_pad``, ``up.batch_tiles`` and
``up.scale`` say what was chosen; ``up.notes`` lists the decisions worth telling a user
(precision fallback, compile failure). The caller's model is never modified: the helper works on
a copy.

Why the results are trustworthy:

* **Tiles are cut from the image in host memory** and only one batch of tiles is on the device
  at a time, so the device never holds the whole image.
* **Tiling is exact.** Each tile is extended by ``tile_pad`` LR pixels of real image context; only
  its core is kept. Windows are shifted inward at the image border rather than padded, so the
  network sees the image border exactly where whole-image inference sees it (its own zero
  padding). With ``tile_pad`` at least the receptive radius, the stitched output equals
  whole-image inference up to float summation order. The radius is measured by tracing the
  convolutions the model actually runs (shared blocks count once per use, each conv weighted by
  the resolution it runs at), and the default pad is that radius plus a margin, capped at
  ``MAX_AUTO_PAD`` for very deep networks, whose far field is negligible (see docs/upscale.md).
* **Global context** (RCAN's channel attention pools over the whole image) cannot be tiled
  naively. Here every global average/max pool is synchronised across tiles: a first pass
  collects each pool's statistics over the tile *cores* (the whole image, once), later passes
  feed those image-wide statistics to every tile. ``tile="auto"`` avoids the extra passes by
  running such models on the whole image whenever it fits in memory.
* **Low precision never silently degrades output.** ``precision="auto"`` picks bf16 on CPUs with
  native bf16 (AMX or AVX-512-BF16) and bf16/fp16 on CUDA, then checks the model on a real image
  crop: the low-precision output must be finite and within ``PRECISION_MAX_ABS`` (max abs) and
  ``PRECISION_MIN_PSNR`` (dB) of fp32, else fp32 is used and a note says why. Convolutions that
  read the 3-channel image stay in fp32 (they are cheap, and bf16 has only 8 significant bits:
  not enough to carry 8-bit pixel values through a mean shift exactly).
* **Out of memory** (CUDA or host) during ``tile="auto"`` inference halves the tile and retries.
* **Rewrites are checked.** ``fuse=True`` applies srkd.fusion's rewrites (shuffle folding;
  on CPU conv + ReLU and cat-free cascades) to the copy after tracing, and keeps them only if the fp32 output is unchanged;
  ``up.rewrites`` counts them.
"""

from __future__ import annotations

import copy
import math
import os
import time
import types
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from .errors import SrkdError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda", "mps")
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

# Accept a low-precision mode only if, on a real image crop, it stays this close to fp32.
# 45 dB is ~1.4 8-bit levels RMS of *float* difference before rounding; after rounding to 8 bits
# the mean PSNR change is then a few hundredths of a dB at most (measured: docs/upscale.md).
PRECISION_MAX_ABS = 4.0 / 255.0
PRECISION_MIN_PSNR = 45.0

MAX_AUTO_PAD = 64  # LR px; see module docstring
PAD_MARGIN = 2  # LR px beyond the traced radius: covers sub-pixel stages and resampling ops
MIN_TILE = 32  # LR px; below this the padding dominates and OOM retry gives up
# CPU: estimated bytes of all the windows in flight at once (one per thread). The estimate is
# conservative (measured peak RSS is about 60 % of it), and it is what bounds peak memory: a
# 4096x4096 output stays under 2 GiB. Within it the plan with the least estimated time wins
# (plan_cpu_grid), which on 2 threads is two large windows rather than many small ones.
CPU_WORKING_SET = 2_250_000_000
# One window on n threads takes 1 + CPU_INTRA_OP_PENALTY * (n - 1) times longer per pixel than
# n windows on one thread each (small convolutions scale badly across threads). Measured for
# n = 2 (CARN-M x4, 512x512: whole image 2.70 s vs two half-image windows 2.34 s with 18 % more
# pixels, docs/upscale.md); linear growth beyond 2 threads is an assumption.
CPU_INTRA_OP_PENALTY = 0.35
CPU_MEMORY_FRACTION = 0.25  # of MemAvailable, for one batch of tiles (host RAM is shared)
CUDA_MEMORY_FRACTION = 0.7  # of free device memory after the model is loaded


class SrkdWarning(UserWarning):
    """A decision the user should know about (precision fallback, compile failure)."""


# --------------------------------------------------------------------------------------- devices


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` picks CUDA, then MPS, then CPU; an explicit device must be available."""
    if isinstance(device, torch.device):
        device = str(device)
    name = str(device).strip().lower()
    kind = name.split(":")[0]
    if kind not in DEVICES:
        raise SrkdError(f"unknown device '{device}': use one of {', '.join(DEVICES)} (cuda:N for a given GPU)")
    if kind == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise SrkdError(f"--device {name}: CUDA is not available here (PyTorch {torch.__version__}); use --device cpu or auto")
        try:
            dev = torch.device(name)
        except RuntimeError:
            raise SrkdError(f"bad CUDA device '{name}': use cuda or cuda:N") from None
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise SrkdError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) present")
        return dev
    if kind == "mps":
        if not _mps_available():
            raise SrkdError("--device mps: Apple MPS is not available here; use --device cpu or auto")
        return torch.device("mps")
    if name != "cpu":
        raise SrkdError(f"bad device '{device}': use cpu")
    return torch.device("cpu")


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def cpu_native_bf16() -> bool:
    """True on CPUs with bf16 arithmetic in hardware (AMX or AVX-512-BF16)."""
    capability = ""
    try:
        capability = torch.backends.cpu.get_cpu_capability()
    except (AttributeError, RuntimeError):
        pass
    if "AMX" in capability.upper():
        return True
    try:
        flags = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return False
    return any(flag in flags.split() for flag in ("amx_bf16", "avx512_bf16"))


def resolve_precision(precision: str, device: torch.device) -> str:
    """The requested precision, or for ``auto`` the fastest one the device does well (unchecked)."""
    p = str(precision).strip().lower()
    if p not in PRECISIONS:
        raise SrkdError(f"unknown precision '{precision}': use one of {', '.join(PRECISIONS)}")
    if device.type == "cpu":
        if p == "fp16":
            raise SrkdError("--precision fp16 is not supported on CPU (no fast fp16 convolutions); use bf16 or fp32")
        if p == "auto":
            return "bf16" if cpu_native_bf16() else "fp32"
        return p
    if device.type == "cuda":
        major, _ = torch.cuda.get_device_capability(device)
        bf16_ok = torch.cuda.is_bf16_supported()
        if p == "bf16" and not bf16_ok:
            raise SrkdError("--precision bf16 is not supported by this GPU; use fp16 or fp32")
        if p == "auto":
            # bf16's fp32-sized exponent cannot overflow into the black images that fp16 gives on
            # some models; tensor cores run both at the same speed.
            if bf16_ok and major >= 8:
                return "bf16"
            return "fp16" if major >= 7 else "fp32"
        return p
    # MPS
    if p == "auto":
        return "fp16"
    return p


def is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, getattr(torch.cuda, "OutOfMemoryError", ())):
        return True
    if isinstance(exc, (RuntimeError, MemoryError)):
        msg = str(exc).lower()
        return isinstance(exc, MemoryError) or "out of memory" in msg or "can't allocate memory" in msg or "defaultcpuallocator" in msg
    return False


def available_memory(device: torch.device) -> int:
    """Bytes that one batch of tiles may use on ``device``."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * CUDA_MEMORY_FRACTION)
    if device.type == "mps":
        try:
            rec = torch.mps.recommended_max_memory() - torch.mps.current_allocated_memory()
            return int(max(rec, 256 << 20) * 0.5)
        except (AttributeError, RuntimeError):
            return 2 << 30
    return int(host_available_memory() * CPU_MEMORY_FRACTION)


def host_available_memory() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 4 << 30


# ------------------------------------------------------------------------------------- tracing


@dataclass
class ModelTrace:
    """What one small forward pass reveals about a model."""

    scale: int
    receptive_radius: float  # LR px, upper bound over every path (sum over executed convs)
    floats_per_px: float  # peak working set estimate, in floats per LR input pixel
    global_pools: list = field(default_factory=list)  # modules that pool over the whole image
    output: torch.Tensor | None = field(default=None, repr=False)  # the fp32 output of the traced input


_GLOBAL_POOL_TYPES = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


def _is_global_pool(m: nn.Module) -> bool:
    if not isinstance(m, _GLOBAL_POOL_TYPES):
        return False
    size = m.output_size
    size = (size, size) if isinstance(size, int) or size is None else tuple(size)
    return all(s == 1 for s in size)


def trace_model(model: nn.Module, device: torch.device, size: int = 16, x: torch.Tensor | None = None) -> ModelTrace:
    """Run ``model`` once (fp32) on ``x`` or a random ``size``x``size`` input; record convs, pools, activations.

    Convolutions are recorded per *call*, so a block applied three times (CARN-M's shared unit)
    counts three times, and each is weighted by the resolution it runs at (a 3x3 conv after a x2
    pixel shuffle reaches 0.5 LR px).
    """
    radius = 0.0
    sizes: list[int] = []
    pools: list[nn.Module] = []
    seen_pools: set[int] = set()

    def hook(module, inputs, output):
        nonlocal radius
        x = inputs[0] if inputs else None
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.MaxPool2d, nn.AvgPool2d)) and x is not None and x.dim() == 4:
            k = module.kernel_size if isinstance(module.kernel_size, tuple) else (module.kernel_size,) * 2
            d = getattr(module, "dilation", 1)
            d = d if isinstance(d, tuple) else (d, d)
            reach = max((k[0] - 1) // 2 * d[0], (k[1] - 1) // 2 * d[1])
            radius += reach * size / x.shape[-2]
        if _is_global_pool(module) and id(module) not in seen_pools:
            seen_pools.add(id(module))
            pools.append(module)
        in_place = isinstance(x, torch.Tensor) and isinstance(output, torch.Tensor) and output.data_ptr() == x.data_ptr()
        if isinstance(output, torch.Tensor) and not list(module.children()) and not in_place:
            sizes.append(output.numel())

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    try:
        x = torch.rand(1, 3, size, size) if x is None else x
        size = x.shape[-1]
        if x.shape[-2] != size:
            raise ValueError("trace_model needs a square input")
        with torch.no_grad():
            y = model(x.to(device))
    finally:
        for h in handles:
            h.remove()
    if y.dim() != 4 or y.shape[1] != 3 or y.shape[-1] % size or y.shape[-2] != y.shape[-1]:
        raise SrkdError(f"the model maps a 3x{size}x{size} input to {tuple(y.shape)}: not an RGB super-resolution model")
    scale = y.shape[-1] // size
    # In inference mode only a few activations are alive at once; the three largest (in-place
    # results not counted twice) bound the working set of feed-forward and concatenating (CARN)
    # networks alike.
    top = sorted(sizes, reverse=True)[:3]
    floats_per_px = (sum(top) + y.numel()) / (size * size)
    return ModelTrace(scale, radius, floats_per_px, pools, y.detach().float().cpu())


# ---------------------------------------------------------------------------------- tile plans


@dataclass(frozen=True)
class Tile:
    core: tuple[int, int, int, int]  # y0, y1, x0, x1 in the LR image
    window: tuple[int, int, int, int]  # what the network sees (core plus context)


def _axis_plan(n: int, tile: int | None, pad: int, align: int = 1) -> list[tuple[int, int, int, int]]:
    if tile is None or n <= tile:
        return [(0, n, 0, n)]
    k = math.ceil(n / tile)
    bounds = [round(i * n / k) for i in range(k + 1)]  # near-equal cores: no sliver at the end
    core_max = max(b - a for a, b in zip(bounds, bounds[1:]))
    out = []
    if align > 1:
        # Windows start on the model's own grid (SwinIR partitions attention windows from the
        # image origin) and span whole grid cells; the last one ends at the image border, where
        # the model pads itself exactly as it does for the whole image. It may be shorter.
        win = math.ceil((core_max + 2 * pad + align - 1) / align) * align
        for c0, c1 in zip(bounds, bounds[1:]):
            w0 = max(c0 - pad, 0) // align * align
            out.append((c0, c1, w0, min(w0 + win, n)))
        return out
    win = min(core_max + 2 * pad, n)
    for c0, c1 in zip(bounds, bounds[1:]):
        # Shift the window inward at the border instead of padding: every window has the same
        # size (so tiles batch) and the network meets the image border where it really is.
        w0 = min(max(c0 - pad, 0), n - win)
        out.append((c0, c1, w0, w0 + win))
    return out


def _shape_groups(tiles: list[Tile], batch: int) -> list[list[Tile]]:
    """Consecutive tiles in batches of at most ``batch`` whose windows have one shape."""
    groups: list[list[Tile]] = []
    for t in tiles:
        shape = (t.window[1] - t.window[0], t.window[3] - t.window[2])
        g = groups[-1] if groups else None
        if g and len(g) < batch and (g[0].window[1] - g[0].window[0], g[0].window[3] - g[0].window[2]) == shape:
            g.append(t)
        else:
            groups.append([t])
    return groups


def tile_hw(tile: int | tuple[int, int] | None) -> tuple[int, int] | None:
    """A tile size as (core height, core width): an int means square cores."""
    if tile is None:
        return None
    return (int(tile), int(tile)) if isinstance(tile, int) else (int(tile[0]), int(tile[1]))


def plan_tiles(h: int, w: int, tile: int | tuple[int, int] | None, pad: int, align: int = 1) -> list[Tile]:
    """Cores of at most ``tile`` LR px (an int, or a (height, width) pair) covering the image,
    each with ``pad`` px of real context.

    A core touching no image border gets at least ``pad`` px on every side; at a border the
    context stops at the border, as in whole-image inference. All windows have the same shape,
    except with ``align`` > 1: windows then start on multiples of ``align`` and the last row or
    column of windows may be shorter.
    """
    th, tw = tile_hw(tile) or (None, None)
    rows, cols = _axis_plan(h, th, pad, align), _axis_plan(w, tw, pad, align)
    return [Tile((r[0], r[1], c[0], c[1]), (r[2], r[3], c[2], c[3])) for r in rows for c in cols]


def _axis_options(n: int, pad: int, min_core: int) -> list[tuple[int, int, int]]:
    """(number of cores, core size, window size) for every distinct way to cut one axis."""
    seen: dict[int, tuple[int, int, int]] = {}
    for k in range(1, max(1, n // min_core) + 1):  # cores of at least min_core
        core = math.ceil(n / k)
        plan = _axis_plan(n, core, pad)
        seen.setdefault(len(plan), (len(plan), core, plan[0][3] - plan[0][2]))
    return list(seen.values())


def plan_cpu_grid(h: int, w: int, pad: int, threads: int, max_px: float, min_core: int) -> tuple[tuple[int, int] | None, int]:
    """``(tile, concurrent)`` with the least estimated CPU time: the core (height, width), or None
    for the whole image, and how many windows run at once (``threads``, one thread each, or 1 on
    all threads).

    One window per thread: n windows of area A take about ceil(n / threads) * A. One window at a
    time on all threads: n * A * (1 + CPU_INTRA_OP_PENALTY * (threads - 1)) / threads. Each
    window costs its pad, so the best plan is usually as many large windows as there are threads;
    with many threads and little memory, fewer and larger windows on all threads win. The
    windows in flight must fit ``max_px`` LR pixels of estimated working set; if no plan does,
    the smallest windows are used, one at a time.
    """
    threads = max(1, threads)
    shared = (1 + CPU_INTRA_OP_PENALTY * (threads - 1)) / threads
    best = smallest = None
    for ny, th, wy in _axis_options(h, pad, min_core):
        for nx, tw, wx in _axis_options(w, pad, min_core):
            n, area = ny * nx, wy * wx
            tile = None if n == 1 else (th, tw)
            if smallest is None or area < smallest[1]:
                smallest = (0.0, area, tile, 1)
            for concurrent in {threads, 1}:
                if concurrent > 1 and n == 1:
                    continue  # a single window always gets every thread
                cost = math.ceil(n / concurrent) * area if concurrent > 1 else n * area * shared
                if area * min(n, concurrent) <= max_px and (best is None or cost < best[0]):
                    best = (cost, area, tile, concurrent)
    _, _, tile, concurrent = best or smallest
    return tile, concurrent


# ----------------------------------------------------------------------- global pool syncing


class _PoolSync:
    """Replace each global pool's per-tile result by the image-wide value.

    ``record`` accumulates each pool's input over the tile cores only (every image pixel once);
    ``apply`` makes each pool return the statistics of the previous pass.
    """

    def __init__(self, pools: list[nn.Module]):
        self.pools = pools
        self.record = False
        self.apply = False
        self.cores: list[tuple[int, int, int, int]] = []  # per batch item, relative to its window
        self.window_hw = (1, 1)
        self.acc: dict[int, torch.Tensor] = {}
        self.count: dict[int, int] = {}
        self.stats: dict[int, torch.Tensor] = {}
        self.handles = [p.register_forward_hook(self._hook) for p in pools]

    def start_pass(self, record: bool, apply: bool) -> None:
        if apply:
            self.stats = {k: self._finish(k, v) for k, v in self.acc.items()}
        self.record, self.apply = record, apply
        self.acc, self.count = {}, {}

    def _finish(self, key: int, acc: torch.Tensor) -> torch.Tensor:
        is_max = isinstance(self._by_id[key], nn.AdaptiveMaxPool2d)
        return acc if is_max else acc / self.count[key]

    @property
    def _by_id(self) -> dict[int, nn.Module]:
        return {id(p): p for p in self.pools}

    def _hook(self, module, inputs, output):
        key = id(module)
        if self.record:
            x = inputs[0]
            ry, rx = x.shape[-2] / self.window_hw[0], x.shape[-1] / self.window_hw[1]
            is_max = isinstance(module, nn.AdaptiveMaxPool2d)
            for b, (y0, y1, x0, x1) in enumerate(self.cores):
                part = x[b, :, round(y0 * ry) : round(y1 * ry), round(x0 * rx) : round(x1 * rx)].float()
                val = part.amax(dim=(1, 2)) if is_max else part.sum(dim=(1, 2), dtype=torch.float64)
                prev = self.acc.get(key)
                self.acc[key] = val if prev is None else (torch.maximum(prev, val) if is_max else prev + val)
                self.count[key] = self.count.get(key, 0) + part.shape[-1] * part.shape[-2]
        if self.apply:
            stat = self.stats[key]
            return stat.to(output.dtype).view(1, -1, 1, 1).expand_as(output).contiguous()
        return None

    def close(self) -> None:
        for h in self.handles:
            h.remove()


# ------------------------------------------------------------------------------- the helper


class _Fp32Conv:
    """Forward for convolutions that read the 3-channel image: fp32 even under autocast.

    bf16 keeps 8 significant bits, so a pixel value after the mean shift would be rounded by up
    to half an 8-bit level before the network sees it. These convolutions have 3 input channels
    and cost little. A convolution that reads the image and writes features hands its output
    back in the autocast dtype, so that the features downstream (and concatenations of them,
    which would otherwise promote to fp32) stay in low precision. The last feature-to-RGB
    convolution stays in low precision: in fp32 it would cost ~25 % of CARN-M's time (it runs at
    the output resolution) for 0.002 dB on Set5; the mean shift after it is fp32 again.
    """

    @staticmethod
    def forward(self: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
        device_type = x.device.type
        low = getattr(self, "_srkd_low", None) or _autocast_dtype(device_type)
        scale = getattr(self, "_srkd_diagonal", None)
        if scale is not None:
            # A mean shift (1x1, diagonal weight) as one element-wise pass in fp32: the generic
            # convolution path for 3 channels cost ~9 % of CARN-M x4 at the output resolution.
            return torch.addcmul(self.bias.view(1, -1, 1, 1), x, scale)
        if low is None:
            return self._conv_forward(x, self.weight, self.bias)
        with torch.autocast(device_type=device_type, enabled=False):
            y = self._conv_forward(x.float(), self.weight, self.bias)
        return y if self.out_channels == 3 else y.to(low)

    @staticmethod
    def diagonal(conv: nn.Conv2d) -> torch.Tensor | None:
        """The per-channel scale of a 1x1 3->3 convolution whose weight is diagonal, else None."""
        w = conv.weight.detach()
        if conv.kernel_size != (1, 1) or conv.groups != 1 or conv.out_channels != 3 or conv.bias is None \
                or conv.padding not in ((0, 0), "valid") or conv.stride != (1, 1):
            return None
        d = torch.diagonal(w[:, :, 0, 0])
        if not torch.equal(w[:, :, 0, 0], torch.diag(d)):
            return None
        return d.float().view(1, 3, 1, 1).clone()


def _cast_copy(net: nn.Module, dtype: torch.dtype) -> nn.Module:
    """A copy of ``net`` with weights in ``dtype``, except the convolutions that read the image."""
    low = copy.deepcopy(net).to(dtype)
    for m in low.modules():
        if isinstance(m, nn.Conv2d) and m.in_channels == 3:
            m.float()
            m._srkd_low = dtype
    return low


def _summary(exc: BaseException) -> str:
    """``Type: first line of the message`` (at most 120 characters) for one-line notes."""
    return f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:120]}"


def _autocast_dtype(device_type: str) -> torch.dtype | None:
    try:
        if not torch.is_autocast_enabled(device_type):
            return None
        return torch.get_autocast_dtype(device_type)
    except TypeError:  # torch < 2.4
        if device_type == "cpu":
            return torch.get_autocast_cpu_dtype() if torch.is_autocast_cpu_enabled() else None
        return torch.get_autocast_gpu_dtype() if torch.is_autocast_enabled() else None


def _real_image_crop(size: int = 48) -> torch.Tensor:
    """A crop of a bundled benchmark image (edges, texture, flat areas) for the precision check."""
    import cv2

    path = Path(__file__).resolve().parent / "assets" / "benchmarks" / "Set5" / "LR_bicubic" / "X2" / "butterflyx2.png"
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:  # assets stripped from the install: a synthetic image still exercises the range
        g = torch.linspace(0, 1, size)
        return torch.stack([g.view(1, -1).expand(size, size), g.view(-1, 1).expand(size, size), (g.view(1, -1) * g.view(-1, 1))]).unsqueeze(0)
    y0, x0 = (img.shape[0] - size) // 2, (img.shape[1] - size) // 2
    crop = img[y0 : y0 + size, x0 : x0 + size, ::-1].copy()
    return torch.from_numpy(crop).permute(2, 0, 1).unsqueeze(0).float() / 255.0


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a.double() - b.double()) ** 2).mean())
    return float("inf") if mse == 0 else -10.0 * math.log10(mse)


class Upscaler:
    """Run a super-resolution network on images of any size (see the module docstring)."""

    def __init__(
        self,
        model: nn.Module,
        device: str | torch.device = "auto",
        precision: str = "auto",
        tile: int | str | None = "auto",
        tile_pad: int | None = None,
        batch_tiles: int | str = "auto",
        channels_last: bool = True,
        compile: bool = False,
        check_precision: bool = True,
        fuse: bool = True,
        cache: bool = True,
        backend: str = "torch",
    ):
        if hasattr(model, "model") and not isinstance(model, nn.Module):  # a ModelFile
            model = model.model
        if not isinstance(model, nn.Module):
            raise SrkdError(f"expected a model, got {type(model).__name__}")
        self.device = resolve_device(device)
        self.notes: list[str] = []  # decisions worth a warning
        self.info: list[str] = []  # one-time facts worth a line (what backend auto chose)
        self.channels_last = bool(channels_last) and self.device.type in ("cpu", "cuda")

        net = copy.deepcopy(model).eval().requires_grad_(False).to(self.device)
        self._runtime = None  # a non-torch backend's network call (srkd.backends), set at the end
        requested = str(precision).strip().lower()
        self.precision = resolve_precision(requested, self.device)
        desc = _describe(model)
        if requested == "auto" and self.precision == "bf16" and desc is not None and not desc.supports_bf16:
            self.precision = "fp32"  # measured to lose more than BF16_LIMIT_DB (the model's spec)
            self._note(f"{desc.arch} loses more than 0.05 dB in bf16 (benchmarks/precision_table.py); using fp32")
        will_check = requested == "auto" and self.precision != "fp32" and check_precision
        # Decisions verified before for these weights, srkd, torch and device (srkd.decisions).
        from . import decisions

        self._decision_key = decisions.key(model, self.device, requested) if cache and (will_check or fuse) else None
        known = (decisions.load(self._decision_key) if self._decision_key else None) or {}
        learned: dict = {}
        check_now = will_check and "precision_ok" not in known
        # One fp32 pass does both jobs: trace, and the reference for the precision check.
        self.trace = trace_model(net, self.device, x=_real_image_crop() if check_now else None)
        self.scale = self.trace.scale
        # after the trace: the fused convolutions no longer call their module (no hooks fire)
        self.rewrites = {"folded_shuffles": 0, "conv_relu": 0, "cat_free_cascades": 0}
        if fuse:
            if known.get("rewrite_ok") is False:
                self._note("srkd.fusion changed this model's output; running it unfused")
            else:
                ok = self._rewrite(net, verify="rewrite_ok" not in known)
                learned["rewrite_ok"] = ok
                if not ok:
                    net = copy.deepcopy(model).eval().requires_grad_(False).to(self.device)
                    self.trace = trace_model(net, self.device, x=_real_image_crop() if check_now else None)
        self.global_context = bool(self.trace.global_pools) or getattr(_describe(model), "receptive_radius", 0) == -1
        for m in net.modules():
            if isinstance(m, nn.Conv2d) and m.in_channels == 3:
                m.forward = types.MethodType(_Fp32Conv.forward, m)
                m._srkd_diagonal = _Fp32Conv.diagonal(m)
        if self.channels_last:
            net = net.to(memory_format=torch.channels_last)
        self.net = net  # fp32
        self._active = self._forward = None  # set once the precision is settled
        # Low precision runs on a copy whose weights are cast once (autocast would cast them at
        # every call: ~20 % of CARN-M's time on CPU). Models that do not run that way (an op
        # mixing dtypes) use autocast on the fp32 network instead.
        self._low_net: nn.Module | None = None
        if self.precision != "fp32":
            self._low_net = _cast_copy(net, _DTYPES[self.precision])
            if not check_now:
                self._probe_low(torch.rand(1, 3, 16, 16))

        if will_check:
            if check_now:
                ok, why = self.check_precision(self.precision, reference=self.trace.output)
                learned.update(precision_ok=ok, precision_why=why)
            else:
                ok, why = bool(known["precision_ok"]), str(known.get("precision_why", ""))
            if not ok:
                self._note(f"{self.precision} changes this model's output ({why}); using fp32")
                self.precision = "fp32"
                self._low_net = None
        if self._decision_key and any(known.get(k) != v for k, v in learned.items()):
            decisions.store(self._decision_key, {**known, **learned})
        self._active = self._low_net if self._low_net is not None else self.net
        self._forward = self._active
        self._pool_sync = None
        if self.trace.global_pools:
            names = {id(m): n for n, m in net.named_modules()}
            by_name = dict(self._active.named_modules())
            self._pool_sync = _PoolSync([by_name[names[id(p)]] for p in self.trace.global_pools])
        from .esa_sync import EsaSync
        from .models.blocks import ESA

        esa = [m for m in self._active.modules() if isinstance(m, ESA)]
        self._esa_sync = EsaSync(esa) if esa else None

        self.align = int(getattr(desc, "pad_multiple", 1) or 1)  # the model's own grid (SwinIR windows)
        self.min_tile_pad = int(getattr(desc, "min_tile_pad", 0) or 0)
        self.min_input = int(getattr(desc, "min_input", 1) or 1)
        self._arch = getattr(desc, "arch", "this model")
        self.tile_pad = self._resolve_pad(tile_pad)
        self.tile_mode = self._resolve_tile_arg(tile)
        self.batch_mode = batch_tiles
        if batch_tiles != "auto" and (not isinstance(batch_tiles, int) or batch_tiles < 1):
            raise SrkdError(f"batch_tiles must be 'auto' or a positive integer, got {batch_tiles!r}")
        self.tile = self.tile_mode if isinstance(self.tile_mode, int) else None
        self.batch_tiles = batch_tiles if isinstance(batch_tiles, int) else 1

        if compile:
            try:
                self._forward = torch.compile(self._active, dynamic=False)
            except Exception as exc:  # noqa: BLE001 - compile support varies by platform
                self._note(f"torch.compile is unavailable here ({type(exc).__name__}); running eagerly")
        self._compiled = compile and self._forward is not self._active
        self.backend = self._setup_backend(backend, model, requested, cache)

    def _rewrite(self, net: nn.Module, verify: bool = True) -> bool:
        """srkd.fusion's rewrites of ``net`` in place; False if they changed the output (fp32, 1e-4).

        ``verify=False``: a cached decision already says they do not; apply them without the check.
        """
        from . import fusion

        x = torch.rand(1, 3, 20, 20, generator=torch.Generator().manual_seed(0)).to(self.device)
        with torch.no_grad():
            ref = net(x) if verify else None
            cpu = self.device.type == "cpu"  # the other two rewrites are oneDNN calls
            folded = fusion.fold_shuffles(net, x)
            cascades = fusion.fuse_cascades(net) if cpu else 0  # reads the fuse convs: before fuse_conv_relu
            fused = fusion.fuse_conv_relu(net) if cpu else 0
            if not folded and not fused and not cascades:
                return True
            if not verify:
                self.rewrites = {"folded_shuffles": folded, "conv_relu": fused, "cat_free_cascades": cascades}
                return True
            try:
                out = net(x)
                same = out.shape == ref.shape and float((out - ref).abs().max()) <= 1e-4
            except RuntimeError:
                same = False
        if same:
            self.rewrites = {"folded_shuffles": folded, "conv_relu": fused, "cat_free_cascades": cascades}
        else:
            self._note("srkd.fusion changed this model's output; running it unfused")
        return same

    def _probe_low(self, x: torch.Tensor) -> torch.Tensor:
        """Run the low-precision path once; switch from cast weights to autocast if they fail."""
        try:
            return self._run_batch(x, self.precision)
        except RuntimeError as exc:
            if self._low_net is None or is_out_of_memory(exc):
                raise
            self._low_net = None
            return self._run_batch(x, self.precision)

    # ------------------------------------------------------------------ configuration helpers

    def _setup_backend(self, backend: str, model: nn.Module, requested: str, cache: bool) -> str:
        """Resolve ``backend`` (srkd.backends); a non-torch one replaces the network call only."""
        from . import backends, decisions

        backend = backends.check_backend(backend)
        if backend == "torch":
            return backend
        if self.device.type != "cpu":
            raise SrkdError(f"--backend {backend} runs on the CPU here; use --device cpu or --backend torch")
        if backend == "auto":
            if self.global_context:
                return "torch"  # synchronised tiling (pools, ESA) exists on the torch path only
            if not any(backends.installed(b) for b in ("openvino", "onnxruntime")):
                return "torch"  # nothing to choose between without the [deploy] extra
            key = decisions.key(model, self.device, f"backend-v2:{requested}") if cache else None
            known = decisions.load(key) if key else None
            if known and known.get("backend") in backends.BACKENDS and (known["backend"] == "torch" or backends.installed(known["backend"])):
                chosen, precision = known["backend"], known["precision"]
            else:
                t0 = time.perf_counter()
                chosen, precision, self._runtime, _ = backends.choose(
                    copy.deepcopy(model), lambda x: self._run_batch(x), self.precision, self.scale, requested)
                self.info.append(f"backend auto: {chosen} {precision} is the fastest within "
                                 f"{backends.AUTO_MAX_LOSS_DB} dB of fp32 for this model (chosen once in "
                                 f"{time.perf_counter() - t0:.1f} s, then cached; --backend torch skips it)")
                if key:
                    decisions.store(key, {"backend": chosen, "precision": precision})
            if chosen == "torch":
                return "torch"
            backend = chosen
        else:
            backends.require(backend)
            precision = requested if requested in ("fp32", "bf16") and backend == "openvino" else "fp32"
            if self.global_context:
                self.tile_mode = None  # a runtime cannot synchronise pools or ESA maps across tiles
                self._note(f"{backend} runs this global-context model on whole images (exact tiling needs --backend torch)")
        if self._runtime is None:  # not already loaded by backends.choose
            self._runtime = backends.runtime(copy.deepcopy(model).float().cpu().eval(), backend, precision)
        self.precision = precision
        return backend

    def _note(self, msg: str) -> None:
        self.notes.append(msg)
        warnings.warn(msg, SrkdWarning, stacklevel=3)

    def _resolve_pad(self, tile_pad: int | None) -> int:
        if tile_pad is not None:
            if int(tile_pad) < 0:
                raise SrkdError(f"--tile-pad must be >= 0, got {tile_pad}")
            return int(tile_pad)
        traced = min(math.ceil(self.trace.receptive_radius) + PAD_MARGIN, MAX_AUTO_PAD)
        return max(traced, self.min_tile_pad)  # attention reaches beyond the traced convolutions

    @staticmethod
    def _resolve_tile_arg(tile) -> int | str | None:
        if tile is None:
            return None
        if isinstance(tile, str):
            t = tile.strip().lower()
            if t == "auto":
                return "auto"
            if t in ("none", "off", "0"):
                return None
            try:
                tile = int(t)
            except ValueError:
                raise SrkdError(f"--tile must be 'auto', 'none' or a size in pixels, got '{tile}'") from None
        tile = int(tile)
        if tile == 0:
            return None
        if tile < 8:
            raise SrkdError(f"--tile must be at least 8 pixels (or 0/none for whole images), got {tile}")
        return tile

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return None if self.precision == "fp32" else _DTYPES[self.precision]

    def bytes_per_px(self) -> float:
        elem = 4 if self.precision == "fp32" else 2
        # Some layers run in fp32 even under autocast and the allocator fragments: x1.5.
        return self.trace.floats_per_px * elem * 1.5

    def auto_tile(self, h: int, w: int) -> tuple[int | tuple[int, int] | None, int]:
        """(tile, batch) for an h x w image when ``tile='auto'``."""
        return self._auto_plan(h, w)[:2]

    def _auto_plan(self, h: int, w: int) -> tuple[int | tuple[int, int] | None, int, int | None]:
        """(tile, batch, windows at once on CPU or None) for an h x w image."""
        budget = available_memory(self.device)
        per_px = self.bytes_per_px()
        fits_whole = h * w * per_px <= budget
        if (self.global_context or self._runtime is not None) and fits_whole:
            # global context: exact without the sync passes; a runtime backend: its own threads
            # parallelise one large call better than srkd's tile workers (benchmarks/upscale_peers.py)
            return None, 1, None
        if self.device.type == "cpu":
            tile, concurrent = plan_cpu_grid(h, w, self.tile_pad, torch.get_num_threads(),
                                             min(CPU_WORKING_SET, budget) / per_px, max(MIN_TILE, 2 * self.tile_pad))
            return tile, (1 if self.batch_mode == "auto" or tile is None else int(self.batch_mode)), concurrent
        if fits_whole:
            return None, 1, None
        # Largest tile (multiple of 8) whose padded window fits the budget.
        tile = max(h, w)
        while tile > MIN_TILE and (tile + 2 * self.tile_pad) ** 2 * per_px > budget:
            tile = max(MIN_TILE, (int(tile * 0.8) // 8) * 8)
        if max(h, w) <= tile:
            return None, 1, None
        batch = int(self.batch_mode) if self.batch_mode != "auto" else \
            int(max(1, min(8, budget // max(1.0, (tile + 2 * self.tile_pad) ** 2 * per_px))))
        return tile, batch, None

    def check_precision(self, precision: str, reference: torch.Tensor | None = None) -> tuple[bool, str]:
        """Compare ``precision`` against fp32 on a real image crop: (acceptable, reason)."""
        x = _real_image_crop()
        ref = (self._run_batch(x, "fp32") if reference is None else reference).float().cpu()
        try:
            low = (self._probe_low(x) if precision == self.precision else self._run_batch(x, precision)).float().cpu()
        except RuntimeError as exc:
            return False, _summary(exc)
        if not torch.isfinite(low).all():
            return False, "non-finite values"
        ref, low = ref.clamp(0, 1), low.clamp(0, 1)
        diff = float((ref - low).abs().max())
        psnr = _psnr(ref, low)
        self.precision_check = {"precision": precision, "max_abs": diff, "psnr": psnr}
        if diff > PRECISION_MAX_ABS or psnr < PRECISION_MIN_PSNR:
            return False, f"max difference {diff * 255:.1f}/255, {psnr:.1f} dB vs fp32"
        return True, ""

    # ------------------------------------------------------------------------------ running

    def _run_batch(self, x: torch.Tensor, precision: str | None = None) -> torch.Tensor:
        """Model on a host batch; returns the raw output on the device (unclamped)."""
        if self._runtime is not None:
            return self._runtime(x)
        precision = precision or self.precision
        pin = self.device.type == "cuda"
        xb = x.pin_memory() if pin else x
        xb = xb.to(self.device, non_blocking=pin)
        if self.channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        if precision == "fp32":
            net, autocast = self.net, None
        elif precision == self.precision and self._low_net is not None:
            net, autocast = self._low_net, None
        else:
            net, autocast = self.net, _DTYPES[precision]
        forward = self._forward if precision == self.precision and net is self._active else net
        try:
            return self._call(forward, xb, autocast)
        except Exception as exc:  # noqa: BLE001 - compilation failures surface on the first call
            if forward is net or is_out_of_memory(exc):
                raise
            self._note(f"torch.compile failed ({_summary(exc)}); running eagerly")
            self._forward, self._compiled = self._active, False
            return self._call(net, xb, autocast)

    def _call(self, forward, xb: torch.Tensor, autocast: torch.dtype | None) -> torch.Tensor:
        # no_grad rather than inference_mode: results are ordinary tensors the caller may edit.
        with torch.no_grad():
            if autocast is None:
                return forward(xb).float()
            with torch.autocast(device_type=self.device.type, dtype=autocast):
                return forward(xb).float()

    def process(
        self,
        x: torch.Tensor,
        self_ensemble: bool = False,
        progress: Callable[[int, int], None] | None = None,
        out_dtype: torch.dtype = torch.float32,
    ) -> torch.Tensor:
        """Super-resolve a host tensor (n, 3, h, w) in [0, 1]; see the module docstring."""
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != 3:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise SrkdError(f"expected an image tensor of shape (n, 3, h, w), got {shape}")
        if out_dtype not in (torch.float32, torch.uint8):
            raise SrkdError(f"out_dtype must be torch.float32 or torch.uint8, got {out_dtype}")
        if min(x.shape[-2:]) < self.min_input:
            raise SrkdError(f"the image is {x.shape[-1]}x{x.shape[-2]} px; {self._arch} needs at least "
                            f"{self.min_input} px on each side")
        x = x.detach().to("cpu", torch.float32)
        outs = [self._process_one(x[i : i + 1], self_ensemble, progress, out_dtype) for i in range(x.shape[0])]
        return outs[0] if len(outs) == 1 else torch.cat(outs)

    def _process_one(self, x, self_ensemble, progress, out_dtype) -> torch.Tensor:
        h, w = x.shape[-2:]
        concurrent = None
        if self.tile_mode == "auto":
            tile, batch, concurrent = self._auto_plan(h, w)
        else:
            tile, batch = self.tile_mode, self.batch_tiles
        while True:
            try:
                if self_ensemble:
                    out = self._ensemble(x, tile, batch, progress, concurrent)
                    if out_dtype == torch.uint8:
                        out = out.mul_(255.0).round_().to(torch.uint8)
                else:
                    out = self._tiled(x, tile, batch, progress, out_dtype, concurrent)
                break
            except Exception as exc:  # noqa: BLE001 - only OOM is retried, everything else re-raised
                if not is_out_of_memory(exc):
                    raise
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                if self.tile_mode != "auto":
                    raise SrkdError(
                        f"out of memory with --tile {tile or 'none'} on {self.device.type}; use a smaller --tile or --tile auto"
                    ) from None
                if batch > 1:
                    batch = max(1, batch // 2)
                    continue
                current = tile_hw(tile) or (h, w)
                if max(current) <= MIN_TILE:
                    raise SrkdError(f"out of memory on {self.device.type} even with {MIN_TILE} px tiles; free memory or use --device cpu") from None
                tile = tuple(max(MIN_TILE, (c // 2 // 8) * 8) for c in current)
        self.tile, self.batch_tiles = tile, batch
        return out

    def _ensemble(self, x, tile, batch, progress, concurrent=None) -> torch.Tensor:
        """x8 geometric self-ensemble: flips and transposes, undone and averaged in float32."""
        acc = None
        for k in range(8):
            t = _dihedral(x, k)
            sub = None if progress is None else (lambda d, n, k=k: progress(k * n + d, 8 * n))
            y = _dihedral_inverse(self._tiled(t, tile, batch, sub, concurrent=concurrent), k)
            acc = y if acc is None else acc.add_(y)
        return acc.div_(8.0)

    def _tiled(self, x: torch.Tensor, tile: int | tuple[int, int] | None, batch: int, progress,
               out_dtype=torch.float32, concurrent: int | None = None) -> torch.Tensor:
        """``concurrent``: windows at once on CPU (the auto plan's choice); None: as many as threads allow."""
        h, w = x.shape[-2:]
        s = self.scale
        tiles = plan_tiles(h, w, tile, self.tile_pad, self.align)
        groups = _shape_groups(tiles, batch)
        sync = (self._pool_sync or self._esa_sync) if len(tiles) > 1 else None
        # Global pools: pass 1 collects image-wide statistics (with per-tile pooling), pass 2
        # re-collects them with pass 1's statistics applied, pass 3 produces the output. Each
        # pass removes most of the remaining tiling error (measured in docs/upscale.md). ESA
        # blocks (srkd.esa_sync) take one pass per block plus one and are then exact.
        passes = (sync.passes if hasattr(sync, "passes") else [(True, False), (True, True), (False, True)]) if sync else [(False, False)]
        if sync is not None:
            sync.image_hw = (h, w)
        total = len(tiles) * len(passes)
        done = 0

        def window(group):
            return torch.cat([x[:, :, t.window[0] : t.window[1], t.window[2] : t.window[3]] for t in group])

        def run(group, last: bool):
            xb = window(group)
            if sync:
                sync.window_hw = (xb.shape[-2], xb.shape[-1])
                sync.windows = [t.window for t in group]
                sync.cores = [
                    (t.core[0] - t.window[0], t.core[1] - t.window[0], t.core[2] - t.window[2], t.core[3] - t.window[2])
                    for t in group
                ]
            y = self._run_batch(xb)
            if y.shape[-2] != xb.shape[-2] * s or y.shape[-1] != xb.shape[-1] * s:
                raise SrkdError(f"the model returned {tuple(y.shape)} for a {tuple(xb.shape)} input; expected x{s}")
            if not last:
                return None
            y = y.clamp_(0.0, 1.0)
            if out_dtype == torch.uint8:  # rounded on the device: 4x less to transfer and to hold
                y = y.mul_(255.0).round_().to(torch.uint8)
            return y.cpu()

        out = torch.empty(1, 3, h * s, w * s, dtype=out_dtype) if len(tiles) > 1 else None
        # a runtime backend uses its own threads (and OpenVINO's request is not re-entrant)
        workers = self._cpu_workers(len(groups), groups[0], concurrent) if not sync and self._runtime is None else 1
        threads = torch.get_num_threads()
        pool = None
        try:
            if workers > 1:
                # Several tiles at once, one thread each, beat one tile on several threads: small
                # convolutions scale badly across threads, and on a busy machine every
                # intra-op barrier waits for a descheduled thread (measured in docs/upscale.md).
                from concurrent.futures import ThreadPoolExecutor

                torch.set_num_threads(1)
                pool = ThreadPoolExecutor(workers, thread_name_prefix="srkd-tile")
            for p, (record, apply) in enumerate(passes):
                if sync:
                    sync.start_pass(record, apply)
                last = p == len(passes) - 1
                results = pool.map(run, groups, [last] * len(groups)) if pool else (run(g, last) for g in groups)
                for group, y in zip(groups, results):
                    if last and len(tiles) == 1:  # the whole image: no stitching, no second buffer
                        out = y
                    elif last:
                        for b, t in enumerate(group):
                            (cy0, cy1, cx0, cx1), (wy0, _, wx0, _) = t.core, t.window
                            out[:, :, cy0 * s : cy1 * s, cx0 * s : cx1 * s] = y[
                                b : b + 1, :, (cy0 - wy0) * s : (cy1 - wy0) * s, (cx0 - wx0) * s : (cx1 - wx0) * s
                            ]
                    del y
                    done += len(group)
                    if progress is not None:
                        progress(done, total)
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
                torch.set_num_threads(threads)
            if sync:
                sync.start_pass(False, False)
        return out

    def _cpu_workers(self, n_groups: int, group, limit: int | None = None) -> int:
        """Tiles processed concurrently: CPU only, bounded by threads (or ``limit``), tiles and memory."""
        if self.device.type != "cpu" or n_groups < 2 or self._compiled:
            return 1
        t = group[0]
        window_px = len(group) * (t.window[1] - t.window[0]) * (t.window[3] - t.window[2])
        fit = int(available_memory(self.device) // max(1.0, window_px * self.bytes_per_px()))
        return max(1, min(limit or torch.get_num_threads(), n_groups, fit))

    def __repr__(self) -> str:
        tile = self.tile_mode if self.tile_mode == "auto" else (self.tile or "none")
        return (
            f"Upscaler(x{self.scale}, device={self.device}, precision={self.precision}, tile={tile}, "
            f"tile_pad={self.tile_pad}, channels_last={self.channels_last}, compile={self._compiled})"
        )


def _describe(model: nn.Module):
    try:
        from .models.registry import describe

        return describe(model)
    except Exception:  # noqa: BLE001 - foreign modules lack srkd's attributes; tracing covers them
        return None


def _dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """One of the 8 flips/transposes of the spatial axes (k = 0 is the identity)."""
    if k & 4:
        x = x.transpose(-2, -1)
    if k & 2:
        x = x.flip(-2)
    if k & 1:
        x = x.flip(-1)
    return x.contiguous()


def _dihedral_inverse(x: torch.Tensor, k: int) -> torch.Tensor:
    if k & 1:
        x = x.flip(-1)
    if k & 2:
        x = x.flip(-2)
    if k & 4:
        x = x.transpose(-2, -1)
    return x.contiguous()


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """HxWx3 array (uint8, uint16 or float in [0, 1]) -> (1, 3, h, w) float32 in [0, 1]."""
    if img.dtype == np.uint8:
        scale = 255.0
    elif img.dtype == np.uint16:
        scale = 65535.0
    else:
        scale = 1.0
    if not img.flags.writeable:  # e.g. np.asarray(PIL image); torch wants writable memory
        img = img.copy()
    t = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).unsqueeze(0).to(torch.float32)
    return t.div_(scale) if scale != 1.0 else t.clamp_(0.0, 1.0)


__all__ = [
    "Upscaler",
    "SrkdWarning",
    "resolve_device",
    "resolve_precision",
    "cpu_native_bf16",
    "plan_tiles",
    "plan_cpu_grid",
    "trace_model",
    "Tile",
    "to_tensor",
]
