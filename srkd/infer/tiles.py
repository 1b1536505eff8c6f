"""Tiles: exact plans over the LR image, the CPU grid planner, and the tiled run itself.

Each tile is extended by ``tile_pad`` LR pixels of real image context and only its core is kept.
Windows are shifted inward at the image border rather than padded, so the network sees the
border where whole-image inference sees it; with ``tile_pad`` at least the receptive radius the
stitched output equals whole-image inference up to float summation order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import SrkdError
from .device import available_memory, torch_threads

MAX_AUTO_PAD = 64  # LR px; see srkd.infer's module docstring
PAD_MARGIN = 2  # LR px beyond the traced radius: covers sub-pixel stages and resampling ops
MIN_TILE = 32  # LR px; below this the padding dominates and OOM retry gives up
# CPU: estimated bytes of all the windows in flight at once (one per thread). The estimate is
# conservative, and it is what bounds peak memory (benchmarks/upscale_speed.py measures the peak
# RSS of a 4096x4096 output). Within it the plan with the least estimated time wins (plan_cpu_grid).
CPU_WORKING_SET = 2_250_000_000
# One window on n threads takes 1 + CPU_INTRA_OP_PENALTY * (n - 1) times longer per pixel than
# n windows on one thread each (small convolutions scale badly across threads). Chosen from
# whole-image against two-window timings of CARN-M x4 on 2 threads (docs/upscale.md, "Tiling that never shows");
# linear growth beyond 2 threads is an assumption.
CPU_INTRA_OP_PENALTY = 0.35


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


def shape_groups(tiles: list[Tile], batch: int) -> list[list[Tile]]:
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


# --------------------------------------------------------------------------------- the tiled run

# Global pools: pass 1 collects image-wide statistics (with per-tile pooling), pass 2 re-collects
# them with pass 1's statistics applied, pass 3 produces the output; each pass removes most of
# the remaining tiling error (benchmarks/upscale_tiling.py). ESA blocks (srkd.infer.esasync) bring
# their own passes and are then exact.
POOL_PASSES = [(True, False), (True, True), (False, True)]


def _bind(sync, group, xb: torch.Tensor) -> None:
    """Tell a synchroniser which windows (and cores within them) the next batch holds."""
    sync.window_hw = (xb.shape[-2], xb.shape[-1])
    sync.windows = [t.window for t in group]
    sync.cores = [(t.core[0] - t.window[0], t.core[1] - t.window[0], t.core[2] - t.window[2], t.core[3] - t.window[2])
                  for t in group]


def _stitch(out: torch.Tensor, y: torch.Tensor, group, s: int) -> None:
    for b, t in enumerate(group):
        (cy0, cy1, cx0, cx1), (wy0, _, wx0, _) = t.core, t.window
        out[:, :, cy0 * s : cy1 * s, cx0 * s : cx1 * s] = y[
            b : b + 1, :, (cy0 - wy0) * s : (cy1 - wy0) * s, (cx0 - wx0) * s : (cx1 - wx0) * s
        ]


def run_tiled(up, x: torch.Tensor, tile: int | tuple[int, int] | None, batch: int, progress,
              out_dtype=torch.float32, concurrent: int | None = None) -> torch.Tensor:
    """``up``'s network over the tiles of ``x`` (1, 3, h, w), stitched on the host.

    ``concurrent``: windows at once on CPU (the auto plan's choice); None: as many as threads allow.
    """
    h, w = x.shape[-2:]
    s = up.scale
    tiles = plan_tiles(h, w, tile, up.tile_pad, up.align)
    groups = shape_groups(tiles, batch)
    sync = (up._pool_sync or up._esa_sync) if len(tiles) > 1 else None
    passes = (getattr(sync, "passes", POOL_PASSES)) if sync else [(False, False)]
    if sync is not None:
        sync.image_hw = (h, w)
    total, done = len(tiles) * len(passes), 0

    def run(group, last: bool):
        xb = torch.cat([x[:, :, t.window[0] : t.window[1], t.window[2] : t.window[3]] for t in group])
        if sync:
            _bind(sync, group, xb)
        y = up._run_batch(xb)
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
    workers = up._cpu_workers(len(groups), groups[0], concurrent) if not sync and up._runtime is None else 1
    pool = None
    # Several tiles at once, one thread each, beat one tile on several threads: small
    # convolutions scale badly across threads, and on a busy machine every intra-op barrier waits
    # for a descheduled thread (docs/upscale.md, "Tiling that never shows").
    with torch_threads(1 if workers > 1 else None):
        try:
            if workers > 1:
                from concurrent.futures import ThreadPoolExecutor

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
                        _stitch(out, y, group, s)
                    del y
                    done += len(group)
                    if progress is not None:
                        progress(done, total)
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
            if sync:
                sync.start_pass(False, False)
    return out


def cpu_workers(up, n_groups: int, group, limit: int | None = None) -> int:
    """Tiles processed concurrently: CPU only, bounded by threads (or ``limit``), tiles and memory."""
    if up.device.type != "cpu" or n_groups < 2 or up._compiled:
        return 1
    t = group[0]
    window_px = len(group) * (t.window[1] - t.window[0]) * (t.window[3] - t.window[2])
    fit = int(available_memory(up.device) // max(1.0, window_px * up.bytes_per_px()))
    return max(1, min(limit or torch.get_num_threads(), n_groups, fit))


def run_ensemble(up, x, tile, batch, progress, concurrent=None) -> torch.Tensor:
    """x8 geometric self-ensemble: flips and transposes, undone and averaged in float32."""
    acc = None
    for k in range(8):
        t = dihedral(x, k)
        sub = None if progress is None else (lambda d, n, k=k: progress(k * n + d, 8 * n))
        y = dihedral_inverse(run_tiled(up, t, tile, batch, sub, concurrent=concurrent), k)
        acc = y if acc is None else acc.add_(y)
    return acc.div_(8.0)


def dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """One of the 8 flips/transposes of the spatial axes (k = 0 is the identity)."""
    if k & 4:
        x = x.transpose(-2, -1)
    if k & 2:
        x = x.flip(-2)
    if k & 1:
        x = x.flip(-1)
    return x.contiguous()


def dihedral_inverse(x: torch.Tensor, k: int) -> torch.Tensor:
    if k & 1:
        x = x.flip(-1)
    if k & 2:
        x = x.flip(-2)
    if k & 4:
        x = x.transpose(-2, -1)
    return x.contiguous()
