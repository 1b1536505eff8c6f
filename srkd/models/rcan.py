"""RCAN (Zhang et al., ECCV 2018) with EDSR-PyTorch / yulunzhang/RCAN module names.

Residual-in-residual: ``n_resgroups`` groups of ``n_resblocks`` residual channel-attention blocks
(RCAB), each group closed by a convolution and a skip, the trunk closed by another.
"""

from __future__ import annotations

import torch
from torch import nn

from .blocks import DIV2K_RGB_MEAN, MeanShift, Upsampler, body_taps, check_scale, default_conv


class CALayer(nn.Module):
    """Channel attention: global average pool, 1x1 squeeze (C/r), ReLU, 1x1 excite, sigmoid."""

    def __init__(self, channel: int, reduction: int = 16):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.conv_du = nn.Sequential(
            nn.Conv2d(channel, channel // reduction, 1, padding=0, bias=True),
            nn.ReLU(inplace=True),
            nn.Conv2d(channel // reduction, channel, 1, padding=0, bias=True),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.conv_du(self.avg_pool(x))


class RCAB(nn.Module):
    """conv-ReLU-conv-CA with an unscaled identity skip (the official code ignores res_scale)."""

    def __init__(self, n_feat: int, reduction: int):
        super().__init__()
        self.body = nn.Sequential(
            default_conv(n_feat, n_feat, 3), nn.ReLU(True), default_conv(n_feat, n_feat, 3), CALayer(n_feat, reduction)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + x


class ResidualGroup(nn.Module):
    def __init__(self, n_feat: int, reduction: int, n_resblocks: int):
        super().__init__()
        self.body = nn.Sequential(*[RCAB(n_feat, reduction) for _ in range(n_resblocks)], default_conv(n_feat, n_feat, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + x


class RCAN(nn.Module):
    """Residual channel attention network (paper: 10 groups x 20 RCAB, 64 features, reduction 16)."""

    arch = "rcan"

    def __init__(
        self,
        scale: int = 4,
        n_resgroups: int = 10,
        n_resblocks: int = 20,
        n_feats: int = 64,
        reduction: int = 16,
        rgb_range: float = 255.0,
        rgb_mean: tuple[float, float, float] = DIV2K_RGB_MEAN,
    ):
        super().__init__()
        self.scale = check_scale(scale)
        self.scales = (self.scale,)
        self.n_resgroups, self.n_resblocks = int(n_resgroups), int(n_resblocks)
        self.n_feats, self.reduction = int(n_feats), int(reduction)
        if self.n_feats // self.reduction < 1:
            raise ValueError(f"n_feats ({n_feats}) must be at least reduction ({reduction})")
        self.rgb_range, self.rgb_mean = float(rgb_range), tuple(float(v) for v in rgb_mean)

        self.sub_mean = MeanShift(self.rgb_range, self.rgb_mean, sign=-1)
        self.add_mean = MeanShift(self.rgb_range, self.rgb_mean, sign=1)
        self.head = nn.Sequential(default_conv(3, n_feats, 3))
        self.body = nn.Sequential(
            *[ResidualGroup(n_feats, reduction, n_resblocks) for _ in range(n_resgroups)],
            default_conv(n_feats, n_feats, 3),
        )
        self.tail = nn.Sequential(Upsampler(self.scale, n_feats), default_conv(n_feats, 3, 3))
        self.feature_taps = body_taps("body.", self.n_resgroups, f"body.{self.n_resgroups}")

    def config(self) -> dict:
        return {
            "scale": self.scale,
            "n_resgroups": self.n_resgroups,
            "n_resblocks": self.n_resblocks,
            "n_feats": self.n_feats,
            "reduction": self.reduction,
            "rgb_range": self.rgb_range,
            "rgb_mean": list(self.rgb_mean),
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.sub_mean(x * self.rgb_range)
        x = self.head(x)
        x = self.body(x) + x
        x = self.tail(x)
        return self.add_mean(x) / self.rgb_range
