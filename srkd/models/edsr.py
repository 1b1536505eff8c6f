"""EDSR (Lim et al., CVPRW 2017) with EDSR-PyTorch's module names.

Paper model: 32 residual blocks, 256 features, residual scaling 0.1. "Baseline": 16, 64, 1.0.
Official ``edsr*_x{2,3,4}-*.pt`` files load with ``strict=True``.
"""

from __future__ import annotations

import torch
from torch import nn

from .blocks import DIV2K_RGB_MEAN, MeanShift, ResBlock, Upsampler, body_taps, check_scale, default_conv


class EDSR(nn.Module):
    """Enhanced deep residual network.

    Parameters
    ----------
    scale: upscaling factor (2, 3, 4 or 8).
    n_resblocks, n_feats, res_scale: depth, width and residual scaling of the trunk.
    rgb_range: the value range the weights expect (255 for the official weights); inputs and
        outputs of ``forward`` are always in [0, 1], the range is applied inside.
    rgb_mean: mean subtracted by ``sub_mean`` (DIV2K mean by default).
    """

    arch = "edsr"

    def __init__(
        self,
        scale: int = 4,
        n_resblocks: int = 16,
        n_feats: int = 64,
        res_scale: float = 1.0,
        rgb_range: float = 255.0,
        rgb_mean: tuple[float, float, float] = DIV2K_RGB_MEAN,
    ):
        super().__init__()
        self.scale = check_scale(scale)
        self.scales = (self.scale,)
        self.n_resblocks, self.n_feats, self.res_scale = int(n_resblocks), int(n_feats), float(res_scale)
        self.rgb_range, self.rgb_mean = float(rgb_range), tuple(float(v) for v in rgb_mean)

        self.sub_mean = MeanShift(self.rgb_range, self.rgb_mean, sign=-1)
        self.add_mean = MeanShift(self.rgb_range, self.rgb_mean, sign=1)
        self.head = nn.Sequential(default_conv(3, n_feats, 3))
        self.body = nn.Sequential(
            *[ResBlock(n_feats, 3, res_scale) for _ in range(n_resblocks)], default_conv(n_feats, n_feats, 3)
        )
        self.tail = nn.Sequential(Upsampler(self.scale, n_feats), default_conv(n_feats, 3, 3))
        self.feature_taps = body_taps("body.", self.n_resblocks, f"body.{self.n_resblocks}")

    def config(self) -> dict:
        return {
            "scale": self.scale,
            "n_resblocks": self.n_resblocks,
            "n_feats": self.n_feats,
            "res_scale": self.res_scale,
            "rgb_range": self.rgb_range,
            "rgb_mean": list(self.rgb_mean),
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.sub_mean(x * self.rgb_range)
        x = self.head(x)
        x = self.body(x) + x
        x = self.tail(x)
        return self.add_mean(x) / self.rgb_range
