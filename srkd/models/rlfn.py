"""RLFN (Kong et al., CVPRW 2022; NTIRE 2022 ESR runtime winner) with its official key names.

Layout follows ``bytedance/RLFN`` and ``Amazingren/NTIRE2024_ESR`` ``models/team00_RLFN.py``:
``conv_1``, residual local feature blocks ``block_1..block_4`` (three 3x3 convs + LeakyReLU with a
skip, a 1x1 ``c5`` and a light ESA), ``conv_2`` and a colour sub-pixel ``upsampler``. The
NTIRE 2024 baseline is the pruned ``RLFN_Prune``: 46 features, 48 mid channels, 317,218
parameters, inputs in [0, 255] (``data_range`` 255 in that repo's ``test_demo.py``).
"""

from __future__ import annotations

import torch
from torch import nn

from . import keys
from .blocks import ESA, ColourUpsampler, check_scale
from .spec import AUX, FEAT, RGB, ArchSpec, Family, Format, Slicing, SRModel, ZooEntry, body_taps


class RLFB(nn.Module):
    def __init__(self, channels: int, mid: int, esa_channels: int, negative_slope: float = 0.05):
        super().__init__()
        self.c1_r = nn.Conv2d(channels, mid, 3, padding=1)
        self.c2_r = nn.Conv2d(mid, mid, 3, padding=1)
        self.c3_r = nn.Conv2d(mid, channels, 3, padding=1)
        self.c5 = nn.Conv2d(channels, channels, 1)
        self.esa = ESA(channels, esa_channels, light=True)
        self.act = nn.LeakyReLU(negative_slope, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.c1_r(x))
        out = self.act(self.c2_r(out))
        out = self.act(self.c3_r(out)) + x
        return self.esa(self.c5(out))


class RLFN(SRModel):
    """Residual local feature network (``mid_feats`` None: equal to ``n_feats``, the paper form)."""

    arch = "rlfn"

    def __init__(self, scale: int = 4, n_feats: int = 52, mid_feats: int | None = None, esa_channels: int = 16,
                 n_blocks: int = 4, rgb_range: float = 255.0):
        super().__init__()
        self.scale = check_scale(scale, (2, 3, 4))
        self.scales = (self.scale,)
        self.n_feats = int(n_feats)
        self.mid_feats = int(mid_feats) if mid_feats else self.n_feats
        self.esa_channels, self.n_blocks, self.rgb_range = int(esa_channels), int(n_blocks), float(rgb_range)
        f = self.n_feats
        self.conv_1 = nn.Conv2d(3, f, 3, padding=1)
        for i in range(1, self.n_blocks + 1):
            self.add_module(f"block_{i}", RLFB(f, self.mid_feats, self.esa_channels))
        self.conv_2 = nn.Conv2d(f, f, 3, padding=1)
        self.upsampler = ColourUpsampler(f, self.scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fea = self.conv_1(x * self.rgb_range)
        out = fea
        for i in range(1, self.n_blocks + 1):
            out = getattr(self, f"block_{i}")(out)
        return self.upsampler(self.conv_2(out) + fea) / self.rgb_range


def _rules(model: nn.Module) -> list:
    """Features and mid channels are sliced; ESA keeps its fixed width (RGB: never sliced)."""
    rules = [("conv_1", FEAT, RGB)]
    for i in range(1, model.n_blocks + 1):
        b = f"block_{i}"
        rules += [(f"{b}.c1_r", AUX, FEAT), (f"{b}.c2_r", AUX, AUX), (f"{b}.c3_r", FEAT, AUX), (f"{b}.c5", FEAT, FEAT),
                  (f"{b}.esa.conv1", RGB, FEAT), (f"{b}.esa.conv_f", RGB, RGB), (f"{b}.esa.conv2", RGB, RGB),
                  (f"{b}.esa.conv3", RGB, RGB), (f"{b}.esa.conv4", FEAT, RGB)]
    return rules + [("conv_2", FEAT, FEAT), ("upsampler.0", RGB, FEAT)]


def _read_config(sd: dict) -> dict:
    n_feats = sd["conv_1.weight"].shape[0]
    return {"scale": keys.colour_upsampler_scale(sd, "upsampler.0.weight"), "n_feats": n_feats,
            "mid_feats": sd["block_1.c1_r.weight"].shape[0], "esa_channels": sd["block_1.esa.conv1.weight"].shape[0],
            "n_blocks": keys.count(sd, r"block_(\d+)\.c1_r\.weight"), "rgb_range": 255.0}


_NTIRE24 = "https://raw.githubusercontent.com/Amazingren/NTIRE2024_ESR/6404fa48dde4a4adbf241a51debdc661aef20449/model_zoo/"

SPEC = ArchSpec(
    name="rlfn",
    cls=RLFN,
    families=(
        Family("rlfn", {"n_feats": 52}, "RLFN (paper): 4 blocks, 52 features"),
        Family("rlfn-s", {"n_feats": 48}, "RLFN-S (paper): 4 blocks, 48 features"),
        Family("rlfn-ntire", {"n_feats": 46, "mid_feats": 48}, "RLFN_Prune, NTIRE 2023/2024 ESR baseline: 46/48 channels", (4,)),
    ),
    formats=(Format("rlfn", lambda sd: keys.has_all("conv_1.weight", "block_1.c1_r.weight", "block_1.c5.weight",
                                                     "block_1.esa.conv1.weight", "conv_2.weight", "upsampler.0.weight")(sd)
                    and "block_1.esa.conv_max.weight" not in sd),),
    read_config=_read_config,
    upsampler=("upsampler.",),
    taps=lambda m: body_taps("block_", m.n_blocks, "conv_2", base=1),
    slicing=Slicing(_rules, aux="mid_feats"),
    context="global",  # ESA's strided pooling and resize back to the input size
    min_input=15,  # ESA: conv 3/2 then max-pool 7/3 must leave one pixel
    bf16_delta_db={"rlfn-ntire-x4": -0.013},  # Set5, benchmarks/precision_table.py
    weights={"rlfn-ntire-x4": ZooEntry("team00_rlfn.pth", _NTIRE24 + "team00_rlfn.pth",
                                       sha256="3c9be7b9d7a4bece9b68c83a56a1ffb38010f76413d5f215be6b4be842e18fb2", scale=4)},
    examples=("rlfn:n_feats=8,scale=2,n_blocks=2", "rlfn:n_feats=8,mid_feats=12,esa_channels=4,scale=3"),
    reference="Amazingren/NTIRE2024_ESR models/team00_RLFN.py (bytedance/RLFN)",
)
