"""IMDN (Hui et al., ACM MM 2019) in the simplified form of KAIR and the NTIRE 2022 ESR baseline.

Layout and key names follow ``ofsoundof/NTIRE2022_ESR`` ``models/imdn_baseline.py`` (KAIR's
``IMDN``): ``model.0`` head conv, ``model.1.sub.{0..nb-1}`` information multi-distillation
blocks, ``model.1.sub.{nb}`` the body's closing conv, ``model.2`` the colour sub-pixel conv.
This form has no contrast-aware channel attention (the paper's CCA layer) and uses LeakyReLU
0.05; its NTIRE file (nc 64, nb 8, 893,936 parameters) expects inputs in [0, 1].
"""

from __future__ import annotations

import torch
from torch import nn

from . import keys
from .blocks import check_scale
from .spec import ArchSpec, Family, Format, SRModel, ZooEntry, body_taps


class IMDBlock(nn.Module):
    """Three conv+LReLU stages each splitting off a quarter of the channels, a fourth conv, a 1x1 fuse."""

    def __init__(self, channels: int, negative_slope: float = 0.05, d_rate: float = 0.25):
        super().__init__()
        self.d_nc = int(channels * d_rate)
        self.r_nc = channels - self.d_nc

        def conv_act(cin: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, channels, 3, padding=1), nn.LeakyReLU(negative_slope, inplace=True))

        self.conv1 = conv_act(channels)
        self.conv2 = conv_act(self.r_nc)
        self.conv3 = conv_act(self.r_nc)
        self.conv4 = nn.Conv2d(self.r_nc, self.d_nc, 3, padding=1)
        self.conv1x1 = nn.Conv2d(self.d_nc * 4, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d1, r1 = torch.split(self.conv1(x), (self.d_nc, self.r_nc), dim=1)
        d2, r2 = torch.split(self.conv2(r1), (self.d_nc, self.r_nc), dim=1)
        d3, r3 = torch.split(self.conv3(r2), (self.d_nc, self.r_nc), dim=1)
        return x + self.conv1x1(torch.cat((d1, d2, d3, self.conv4(r3)), dim=1))


class Shortcut(nn.Module):
    """``x + sub(x)`` (KAIR's ShortcutBlock: the module name ``sub`` is in the official keys)."""

    def __init__(self, sub: nn.Module):
        super().__init__()
        self.sub = sub

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.sub(x)


class IMDN(SRModel):
    """Information multi-distillation network (KAIR / NTIRE 2022 baseline form)."""

    arch = "imdn"

    def __init__(self, scale: int = 4, n_feats: int = 64, n_blocks: int = 8, negative_slope: float = 0.05,
                 rgb_range: float = 1.0):
        super().__init__()
        self.scale = check_scale(scale, (2, 3, 4))
        self.scales = (self.scale,)
        self.n_feats, self.n_blocks = int(n_feats), int(n_blocks)
        self.negative_slope, self.rgb_range = float(negative_slope), float(rgb_range)
        if self.n_feats < 4:
            raise ValueError(f"n_feats must be at least 4 (a quarter is distilled per stage), got {n_feats}")
        f = self.n_feats
        body = nn.Sequential(*[IMDBlock(f, self.negative_slope) for _ in range(self.n_blocks)], nn.Conv2d(f, f, 3, padding=1))
        self.model = nn.Sequential(nn.Conv2d(3, f, 3, padding=1), Shortcut(body),
                                   nn.Conv2d(f, 3 * self.scale**2, 3, padding=1), nn.PixelShuffle(self.scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.rgb_range == 1.0:
            return self.model(x)
        return self.model(x * self.rgb_range) / self.rgb_range


def _read_config(sd: dict) -> dict:
    n_feats = sd["model.0.weight"].shape[0]
    n_blocks = keys.count(sd, r"model\.1\.sub\.(\d+)\.conv1\.0\.weight")
    return {"scale": keys.colour_upsampler_scale(sd, "model.2.weight"), "n_feats": n_feats, "n_blocks": n_blocks,
            "negative_slope": 0.05, "rgb_range": 1.0}


_NTIRE22 = "https://raw.githubusercontent.com/ofsoundof/NTIRE2022_ESR/e95ba4a4916bb13d6348f7ee172827e2452e8a31/model_zoo/"

SPEC = ArchSpec(
    name="imdn",
    cls=IMDN,
    families=(Family("imdn-ntire", {"n_feats": 64, "n_blocks": 8}, "IMDN, NTIRE 2022 ESR baseline form: 8 blocks, 64 features"),),
    formats=(
        Format("kair", keys.has_all("model.0.weight", "model.1.sub.0.conv1.0.weight", "model.1.sub.0.conv1x1.weight", "model.2.weight")),
        # srkd.io.convert strips a common "model." prefix (a wrapper in other projects): put it back
        Format("kair", keys.has_all("0.weight", "1.sub.0.conv1.0.weight", "1.sub.0.conv1x1.weight", "2.weight"),
               lambda sd: {f"model.{k}": v for k, v in sd.items()}),
    ),
    read_config=_read_config,
    upsampler=("model.2.",),
    taps=lambda m: body_taps("model.1.sub.", m.n_blocks, f"model.1.sub.{m.n_blocks}"),
    no_slicing="each block splits a fixed quarter of its channels off at every stage, so a narrower IMDN is not a slice of a wider one",
    bf16_delta_db={"imdn-ntire-x4": -0.004},  # Set5, benchmarks/precision_table.py
    weights={"imdn-ntire-x4": ZooEntry("imdn_baseline.pth", _NTIRE22 + "imdn_baseline.pth",
                                       sha256="115b4cc557eba9daaf1a6543c4858014c7e2a410655aafef7c8348ae54acc203", scale=4)},
    examples=("imdn:n_feats=8,n_blocks=2,scale=2", "imdn:n_feats=12,n_blocks=3,scale=3"),
    reference="ofsoundof/NTIRE2022_ESR models/imdn_baseline.py (KAIR models/network_imdn.py)",
)
