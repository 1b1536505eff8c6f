"""RFDN (Liu et al., ECCVW 2020; AIM 2020 efficient-SR winner) with its official key names.

Layout follows ``ofsoundof/NTIRE2022_ESR`` ``models/rfdn_baseline/`` (the authors' code):
``fea_conv``, residual feature distillation blocks ``B1..B{n}`` (each with an ESA block),
``c`` (1x1 fuse of all block outputs + LeakyReLU), ``LR_conv`` and a colour sub-pixel
``upsampler``. The official class hard-codes ``upscale_factor=4`` in its upsampler whatever
``upscale`` says; here the upsampler follows ``scale``. The NTIRE 2022 baseline file (nf 50,
4 blocks, 433,448 parameters) expects inputs in [0, 255] (``data_range`` 255 in that repo's
``test_demo.py``), hence ``rgb_range`` 255.
"""

from __future__ import annotations

import torch
from torch import nn

from . import keys
from .blocks import ESA, ColourUpsampler, check_scale
from .spec import ArchSpec, Family, Format, SRModel, ZooEntry, body_taps


class RFDB(nn.Module):
    """Residual feature distillation block: three (1x1 distil, 3x3 refine + skip) stages, a fourth
    conv, a 1x1 fuse of the four distilled parts and ESA."""

    def __init__(self, channels: int, negative_slope: float = 0.05):
        super().__init__()
        dc, rc = channels // 2, channels
        self.c1_d, self.c1_r = nn.Conv2d(channels, dc, 1), nn.Conv2d(channels, rc, 3, padding=1)
        self.c2_d, self.c2_r = nn.Conv2d(rc, dc, 1), nn.Conv2d(rc, rc, 3, padding=1)
        self.c3_d, self.c3_r = nn.Conv2d(rc, dc, 1), nn.Conv2d(rc, rc, 3, padding=1)
        self.c4 = nn.Conv2d(rc, dc, 3, padding=1)
        self.act = nn.LeakyReLU(negative_slope, inplace=True)
        self.c5 = nn.Conv2d(dc * 4, channels, 1)
        self.esa = ESA(channels, channels // 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d1 = self.act(self.c1_d(x))
        r1 = self.act(self.c1_r(x) + x)
        d2 = self.act(self.c2_d(r1))
        r2 = self.act(self.c2_r(r1) + r1)
        d3 = self.act(self.c3_d(r2))
        r3 = self.act(self.c3_r(r2) + r2)
        r4 = self.act(self.c4(r3))
        return self.esa(self.c5(torch.cat([d1, d2, d3, r4], dim=1)))


class RFDN(SRModel):
    """Residual feature distillation network."""

    arch = "rfdn"

    def __init__(self, scale: int = 4, n_feats: int = 50, n_blocks: int = 4, rgb_range: float = 255.0):
        super().__init__()
        self.scale = check_scale(scale, (2, 3, 4))
        self.scales = (self.scale,)
        self.n_feats, self.n_blocks, self.rgb_range = int(n_feats), int(n_blocks), float(rgb_range)
        if self.n_feats < 4:
            raise ValueError(f"n_feats must be at least 4 (ESA works on a quarter of them), got {n_feats}")
        f = self.n_feats
        self.fea_conv = nn.Conv2d(3, f, 3, padding=1)
        for i in range(1, self.n_blocks + 1):
            self.add_module(f"B{i}", RFDB(f))
        self.c = nn.Sequential(nn.Conv2d(f * self.n_blocks, f, 1), nn.LeakyReLU(0.05, inplace=True))
        self.LR_conv = nn.Conv2d(f, f, 3, padding=1)
        self.upsampler = ColourUpsampler(f, self.scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fea = self.fea_conv(x * self.rgb_range)
        outs, out = [], fea
        for i in range(1, self.n_blocks + 1):
            out = getattr(self, f"B{i}")(out)
            outs.append(out)
        lr = self.LR_conv(self.c(torch.cat(outs, dim=1))) + fea
        return self.upsampler(lr) / self.rgb_range


def _read_config(sd: dict) -> dict:
    return {"scale": keys.colour_upsampler_scale(sd, "upsampler.0.weight"), "n_feats": sd["fea_conv.weight"].shape[0],
            "n_blocks": keys.count(sd, r"B(\d+)\.c1_d\.weight"), "rgb_range": 255.0}


_NTIRE22 = "https://raw.githubusercontent.com/ofsoundof/NTIRE2022_ESR/e95ba4a4916bb13d6348f7ee172827e2452e8a31/model_zoo/"

SPEC = ArchSpec(
    name="rfdn",
    cls=RFDN,
    families=(Family("rfdn-ntire", {"n_feats": 50, "n_blocks": 4}, "RFDN, AIM 2020 / NTIRE 2022 baseline: 4 blocks, 50 features"),),
    formats=(Format("rfdn", keys.has_all("fea_conv.weight", "B1.c1_d.weight", "B1.esa.conv_max.weight", "LR_conv.weight",
                                         "upsampler.0.weight")),),
    read_config=_read_config,
    upsampler=("upsampler.",),
    taps=lambda m: body_taps("B", m.n_blocks, "LR_conv", base=1),
    no_slicing="the distilled channels are half and ESA a quarter of the width, fixed ratios rather than a slice",
    context="global",  # ESA's strided pooling and resize back to the input size
    min_input=15,  # ESA: conv 3/2 then max-pool 7/3 must leave one pixel
    bf16_delta_db={"rfdn-ntire-x4": -0.008},  # Set5, benchmarks/precision_table.py
    weights={"rfdn-ntire-x4": ZooEntry("rfdn_baseline.pth", _NTIRE22 + "rfdn_baseline.pth",
                                       sha256="11af8ec8ebd68689e90ef1e29044f9804c72d3bd9f7573820b7b26035782760c", scale=4)},
    examples=("rfdn:n_feats=8,n_blocks=2,scale=2", "rfdn:n_feats=12,n_blocks=3,scale=4"),
    reference="ofsoundof/NTIRE2022_ESR models/rfdn_baseline/{RFDN,block}.py",
)
