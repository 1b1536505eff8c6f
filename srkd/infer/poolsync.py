"""Global pools across tiles: every tile sees the image-wide statistics (RCAN's channel attention).

A first pass collects each pool's statistics over the tile *cores* (the whole image, once); later
passes feed them to every tile. ESA blocks have their own exact scheme (:mod:`srkd.infer.esasync`).
"""

from __future__ import annotations

import torch
from torch import nn


class PoolSync:
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
