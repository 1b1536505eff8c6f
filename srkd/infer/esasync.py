"""Exact tiling of networks with ESA blocks (RFDN, RLFN): image-wide attention maps.

An ESA block (:class:`srkd.models.blocks.ESA`) pools its strided features over 7x7/3 cells and
resizes the coarse map back to *its input's* size, so a tile's map differs from the whole
image's: the pooling grid moves with the tile origin and the resize ratio with the tile size
(several 8-bit levels whatever the padding: tests/test_archs.py::test_esa_sync_makes_ntire_rlfn_tiling_exact
shows it on the NTIRE RLFN). Here the
map is computed once for the whole image and every tile reads its part of it:

* a *record* pass stores each block's strided features ``conv2(conv1(x))`` over the tile cores,
  on the whole image's stride-2 grid (a window starting on an odd row drops that row first, so
  its grid is the image's), which assembles exactly the whole-image tensor;
* an *apply* pass gives each block the image-wide coarse map, resized with the whole image's
  bilinear geometry and cut to the tile's window.

Block ``k``'s input depends on the maps of blocks ``< k``, so ``n`` blocks take ``n + 1`` passes
(record, record+apply ... apply); the result equals whole-image inference up to float summation
order. The interface (``start_pass``, ``cores``, ``windows``) matches srkd.infer's pool sync.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def _resize_matrix(n_out: int, n_in: int, start: int, stop: int, device, dtype) -> torch.Tensor:
    """Rows ``start..stop`` of the ``n_in -> n_out`` bilinear resize (align_corners=False), as a
    ``(stop - start, n_in)`` matrix: the F.interpolate geometry of the whole image."""
    i = torch.arange(start, stop, dtype=torch.float64)
    src = ((i + 0.5) * (n_in / n_out) - 0.5).clamp_(min=0.0)
    i0 = src.floor().long().clamp_(max=n_in - 1)
    i1 = (i0 + 1).clamp_(max=n_in - 1)
    w1 = src - i0.double()
    m = torch.zeros(stop - start, n_in, dtype=torch.float64)
    rows = torch.arange(stop - start)
    m[rows, i0] += 1.0 - w1
    m[rows, i1] += w1
    return m.to(device=device, dtype=dtype)


class EsaSync:
    def __init__(self, blocks: list[nn.Module]):
        self.blocks = blocks
        self.record = self.apply = False
        self.image_hw = (1, 1)
        self.windows: list[tuple[int, int, int, int]] = []  # absolute (y0, y1, x0, x1) per batch item
        self.cores: list[tuple[int, int, int, int]] = []  # relative to each window (pool-sync convention)
        self.window_hw = (1, 1)
        self.buffers: dict[int, torch.Tensor] = {}
        self.maps: dict[int, torch.Tensor] = {}
        for b in blocks:
            b.__dict__["tile_sync"] = self

    @property
    def active(self) -> bool:
        return self.record or self.apply

    @property
    def passes(self) -> list[tuple[bool, bool]]:
        n = len(self.blocks)
        return [(True, False)] + [(True, True)] * (n - 1) + [(False, True)]

    def start_pass(self, record: bool, apply: bool) -> None:
        if apply:
            with torch.no_grad():
                self.maps = {}
                for block in self.blocks:
                    buf = self.buffers[id(block)]
                    w = block.conv3.weight
                    self.maps[id(block)] = block.coarse(buf.to(w.device, w.dtype)).float()
        self.record, self.apply = record, apply
        if record:
            h, w = self.image_hw
            self.buffers = {}
            self._grid = ((h - 3) // 2 + 1, (w - 3) // 2 + 1)
        if not (record or apply):
            self.buffers, self.maps = {}, {}

    def attention(self, block: nn.Module, c1_: torch.Tensor) -> torch.Tensor:
        if self.record:
            self._record(block, c1_)
        if not self.apply:
            return torch.nn.functional.interpolate(block.coarse(block.conv2(c1_)), c1_.shape[-2:], mode="bilinear",
                                                   align_corners=False)
        coarse = self.maps[id(block)]
        h, w = self.image_hw
        out = []
        for (y0, y1, x0, x1) in self.windows:
            ry = _resize_matrix(h, coarse.shape[-2], y0, y1, coarse.device, coarse.dtype)
            rx = _resize_matrix(w, coarse.shape[-1], x0, x1, coarse.device, coarse.dtype)
            out.append(torch.einsum("yi,bcij,xj->bcyx", ry, coarse, rx))
        return torch.cat(out).to(c1_.dtype)

    def _record(self, block: nn.Module, c1_: torch.Tensor) -> None:
        buf = self.buffers.get(id(block))
        if buf is None:
            buf = self.buffers[id(block)] = torch.zeros(1, c1_.shape[1], *self._grid, device=c1_.device)
        with torch.no_grad():
            for b, ((wy0, _, wx0, _), (cy0, cy1, cx0, cx1)) in enumerate(zip(self.windows, self.cores)):
                oy, ox = wy0 % 2, wx0 % 2  # start on the image's stride-2 grid
                c1 = block.conv2(c1_[b : b + 1, :, oy:, ox:]).float()
                gy, gx = (wy0 + oy) // 2, (wx0 + ox) // 2  # image grid position of c1[0, 0]
                # grid rows j whose input row 2j lies in this tile's core
                jy0, jy1 = math.ceil((wy0 + cy0) / 2), min(math.ceil((wy0 + cy1) / 2), self._grid[0])
                jx0, jx1 = math.ceil((wx0 + cx0) / 2), min(math.ceil((wx0 + cx1) / 2), self._grid[1])
                buf[:, :, jy0:jy1, jx0:jx1] = c1[:, :, jy0 - gy : jy1 - gy, jx0 - gx : jx1 - gx]

    def close(self) -> None:
        for b in self.blocks:
            b.__dict__.pop("tile_sync", None)
