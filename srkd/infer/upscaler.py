"""The Upscaler: a super-resolution network over images of any size (see :mod:`srkd.infer`)."""

from __future__ import annotations

import copy
import math
import warnings
from typing import Callable

import numpy as np
import torch
from torch import nn

from ..errors import SrkdError, SrkdWarning
from ..data.crops import psnr_float, real_image_crop  # noqa: F401 - also importable from here
from ..precision import cast_copy, dtype, install_image_convs, resolve_device, resolve_precision
from .device import available_memory, is_out_of_memory
from .poolsync import PoolSync
from .tiles import (CPU_WORKING_SET, MAX_AUTO_PAD, MIN_TILE, PAD_MARGIN, cpu_workers, plan_cpu_grid, run_ensemble,
                    run_tiled, tile_hw)
from .trace import trace_model

# Accept a low-precision mode only if, on a real image crop, it stays this close to fp32.
# 45 dB is ~1.4 8-bit levels RMS of *float* difference before rounding; after rounding to 8 bits
# the mean PSNR change is then a few hundredths of a dB at most (benchmarks/precision_table.py).
PRECISION_MAX_ABS = 4.0 / 255.0
PRECISION_MIN_PSNR = 45.0


def _summary(exc: BaseException) -> str:
    """``Type: first line of the message`` (at most 120 characters) for one-line notes."""
    return f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:120]}"


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
        from .. import backends, decisions

        if hasattr(model, "model") and not isinstance(model, nn.Module):  # a ModelFile
            model = model.model
        if not isinstance(model, nn.Module):
            raise SrkdError(f"expected a model, got {type(model).__name__}")
        self.device = resolve_device(device)
        self.notes: list[str] = []  # decisions worth a warning
        self.info: list[str] = []  # one-time facts worth a line (what backend auto chose)
        self.channels_last = bool(channels_last) and self.device.type in ("cpu", "cuda")
        self._runtime = None  # a non-torch backend's network call (srkd.backends), set at the end
        requested = str(precision).strip().lower()
        desc = _describe(model)
        self.precision = resolve_precision(requested, self.device)
        if requested == "auto" and self.precision == "bf16" and desc is not None and not desc.supports_bf16:
            self.precision = "fp32"  # loses more than BF16_LIMIT_DB: its spec, from benchmarks/precision_table.py
            self._note(f"{desc.arch} loses more than 0.05 dB in bf16 (benchmarks/precision_table.py); using fp32")
        will_check = requested == "auto" and self.precision != "fp32" and check_precision
        # Decisions verified before for these weights, srkd, torch and device (srkd.decisions).
        self._decision_key = decisions.key(model, self.device, requested) if cache and (will_check or fuse) else None
        known = (decisions.load(self._decision_key) if self._decision_key else None) or {}
        learned: dict = {}
        check_now = will_check and "precision_ok" not in known
        self.net = self._prepare(model, fuse, known, learned, check_now)  # fp32
        self._settle_precision(will_check, check_now, known, learned)
        if self._decision_key and any(known.get(k) != v for k, v in learned.items()):
            decisions.store(self._decision_key, {**known, **learned})
        self._active = self._low_net if self._low_net is not None else self.net
        self._forward = self._active
        self._setup_sync()
        self._setup_tiling(desc, tile, tile_pad, batch_tiles)
        if compile:
            try:
                self._forward = torch.compile(self._active, dynamic=False)
            except Exception as exc:  # noqa: BLE001 - compile support varies by platform
                self._note(f"torch.compile is unavailable here ({type(exc).__name__}); running eagerly")
        self._compiled = compile and self._forward is not self._active
        self.backend = backends.setup(self, backend, model, requested, cache)

    def _prepare(self, model: nn.Module, fuse: bool, known: dict, learned: dict, check_now: bool) -> nn.Module:
        """The private fp32 copy: traced, rewritten (if the rewrites hold), image convs in fp32."""
        net = copy.deepcopy(model).eval().requires_grad_(False).to(self.device)
        # One fp32 pass does both jobs: trace, and the reference for the precision check.
        self.trace = trace_model(net, self.device, x=real_image_crop() if check_now else None)
        self.scale = self.trace.scale
        # after the trace: the fused convolutions no longer call their module (no hooks fire)
        self.rewrites = {"folded_shuffles": 0, "conv_relu": 0, "cat_free_cascades": 0}
        if fuse:
            if known.get("rewrite_ok") is False:
                self._note("srkd.infer.fusion changed this model's output; running it unfused")
            else:
                ok = self._rewrite(net, verify="rewrite_ok" not in known)
                learned["rewrite_ok"] = ok
                if not ok:
                    net = copy.deepcopy(model).eval().requires_grad_(False).to(self.device)
                    self.trace = trace_model(net, self.device, x=real_image_crop() if check_now else None)
        self.global_context = bool(self.trace.global_pools) or getattr(_describe(model), "receptive_radius", 0) == -1
        install_image_convs(net)
        if self.channels_last:
            net = net.to(memory_format=torch.channels_last)
        return net

    def _rewrite(self, net: nn.Module, verify: bool = True) -> bool:
        """srkd.infer.fusion's rewrites of ``net`` in place; False if they changed the output."""
        from .fusion import apply_checked

        ok, counts = apply_checked(net, self.device, verify)
        if ok:
            self.rewrites = counts
        else:
            self._note("srkd.infer.fusion changed this model's output; running it unfused")
        return ok

    def _cpu_workers(self, n_groups: int, group, limit: int | None = None) -> int:
        return cpu_workers(self, n_groups, group, limit)

    def _settle_precision(self, will_check: bool, check_now: bool, known: dict, learned: dict) -> None:
        """Low precision runs on a copy whose weights are cast once (autocast would cast them at every
        call); a model that cannot run that way (an op mixing dtypes) uses autocast on the fp32 network."""
        self._active = self._forward = None  # set once the precision is settled
        self._low_net: nn.Module | None = None
        if self.precision != "fp32":
            self._low_net = cast_copy(self.net, dtype(self.precision))
            if not check_now:
                self._probe_low(torch.rand(1, 3, 16, 16))
        if not will_check:
            return
        if check_now:
            ok, why = self.check_precision(self.precision, reference=self.trace.output)
            learned.update(precision_ok=ok, precision_why=why)
        else:
            ok, why = bool(known["precision_ok"]), str(known.get("precision_why", ""))
        if not ok:
            self._note(f"{self.precision} changes this model's output ({why}); using fp32")
            self.precision = "fp32"
            self._low_net = None

    def _setup_sync(self) -> None:
        """Synchronisers for tiles of models with image-wide context (global pools, ESA)."""
        from ..models.blocks import ESA
        from .esasync import EsaSync

        self._pool_sync = None
        if self.trace.global_pools:
            names = {id(m): n for n, m in self.net.named_modules()}
            by_name = dict(self._active.named_modules())
            self._pool_sync = PoolSync([by_name[names[id(p)]] for p in self.trace.global_pools])
        esa = [m for m in self._active.modules() if isinstance(m, ESA)]
        self._esa_sync = EsaSync(esa) if esa else None

    def _setup_tiling(self, desc, tile, tile_pad, batch_tiles) -> None:
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

    def _probe_low(self, x: torch.Tensor) -> torch.Tensor:
        """Run the low-precision path once; switch from cast weights to autocast if they fail."""
        try:
            return self._run_batch(x, self.precision)
        except RuntimeError as exc:
            if self._low_net is None or is_out_of_memory(exc):
                raise
            self._low_net = None
            return self._run_batch(x, self.precision)

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
        return None if self.precision == "fp32" else dtype(self.precision)

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
        x = real_image_crop()
        ref = (self._run_batch(x, "fp32") if reference is None else reference).float().cpu()
        try:
            low = (self._probe_low(x) if precision == self.precision else self._run_batch(x, precision)).float().cpu()
        except RuntimeError as exc:
            return False, _summary(exc)
        if not torch.isfinite(low).all():
            return False, "non-finite values"
        ref, low = ref.clamp(0, 1), low.clamp(0, 1)
        diff = float((ref - low).abs().max())
        psnr = psnr_float(ref, low)
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
            net, autocast = self.net, dtype(precision)
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
                    out = run_ensemble(self, x, tile, batch, progress, concurrent)
                    if out_dtype == torch.uint8:
                        out = out.mul_(255.0).round_().to(torch.uint8)
                else:
                    out = run_tiled(self, x, tile, batch, progress, out_dtype, concurrent)
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

    def __repr__(self) -> str:
        tile = self.tile_mode if self.tile_mode == "auto" else (self.tile or "none")
        return (
            f"Upscaler(x{self.scale}, device={self.device}, precision={self.precision}, tile={tile}, "
            f"tile_pad={self.tile_pad}, channels_last={self.channels_last}, compile={self._compiled})"
        )


def _describe(model: nn.Module):
    try:
        from ..models.registry import describe

        return describe(model)
    except Exception:  # noqa: BLE001 - foreign modules lack srkd's attributes; tracing covers them
        return None


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
