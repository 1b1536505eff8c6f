"""Building blocks shared by the architectures (EDSR-PyTorch ``common.py`` conventions).

Module nesting and attribute names follow the official code exactly, because the official
state-dict key names are derived from them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

DIV2K_RGB_MEAN = (0.4488, 0.4371, 0.4040)


def default_conv(in_channels: int, out_channels: int, kernel_size: int, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=bias)


class MeanShift(nn.Conv2d):
    """Frozen 1x1 convolution that subtracts (sign=-1) or adds (sign=+1) the dataset mean.

    It is a Conv2d (not a buffer) so that the official ``sub_mean.*``/``add_mean.*`` tensors
    load with ``strict=True``; the bias is ``sign * rgb_range * mean``.
    """

    def __init__(self, rgb_range: float, rgb_mean=DIV2K_RGB_MEAN, rgb_std=(1.0, 1.0, 1.0), sign: int = -1):
        super().__init__(3, 3, kernel_size=1)
        std = torch.tensor(rgb_std, dtype=torch.float32)
        self.weight.data = torch.eye(3).view(3, 3, 1, 1) / std.view(3, 1, 1, 1)
        self.bias.data = sign * rgb_range * torch.tensor(rgb_mean, dtype=torch.float32) / std
        for p in self.parameters():
            p.requires_grad = False


class ResBlock(nn.Module):
    """conv-ReLU-conv with a scaled identity skip (EDSR). ``body.0``/``body.2`` are the convs."""

    def __init__(self, n_feats: int, kernel_size: int = 3, res_scale: float = 1.0):
        super().__init__()
        self.body = nn.Sequential(
            default_conv(n_feats, n_feats, kernel_size), nn.ReLU(True), default_conv(n_feats, n_feats, kernel_size)
        )
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).mul(self.res_scale) + x


class Upsampler(nn.Sequential):
    """Sub-pixel upsampler: log2(scale) x (conv to 4F, PixelShuffle(2)) or one conv to 9F for x3."""

    def __init__(self, scale: int, n_feats: int):
        layers: list[nn.Module] = []
        if scale & (scale - 1) == 0:
            for _ in range(int(math.log2(scale))):
                layers += [default_conv(n_feats, 4 * n_feats, 3), nn.PixelShuffle(2)]
        elif scale == 3:
            layers += [default_conv(n_feats, 9 * n_feats, 3), nn.PixelShuffle(3)]
        else:
            raise ValueError(f"scale {scale} is not supported by the sub-pixel upsampler (use 2, 3, 4 or 8)")
        super().__init__(*layers)


def check_scale(scale: int, supported=(2, 3, 4, 8)) -> int:
    if int(scale) not in supported:
        raise ValueError(f"scale must be one of {', '.join(map(str, supported))}, got {scale}")
    return int(scale)


class ESA(nn.Module):
    """Enhanced spatial attention (RFANet), as in RFDN's ``block.ESA`` and RLFN's ``ESA``.

    A strided conv, a 7x7/3 max-pool and bilinear resizing back to the input size make a coarse
    attention map: its grid depends on the input size, so tiles only approximate whole-image
    output unless they are synchronised (:mod:`srkd.infer.esasync`, used by srkd.infer's tiling; the
    specs mark these architectures as having global context). ``light`` is RLFN's
    version, which drops ``conv_max`` and ``conv3_`` and the ReLUs around them. Inputs must be at
    least 15 px on each side (the conv and pool shrink them to 1 px).
    """

    def __init__(self, n_feats: int, channels: int, light: bool = False):
        super().__init__()
        f = channels
        self.light = light
        self.conv1 = nn.Conv2d(n_feats, f, 1)
        self.conv_f = nn.Conv2d(f, f, 1)
        if not light:
            self.conv_max = nn.Conv2d(f, f, 3, padding=1)
        self.conv2 = nn.Conv2d(f, f, 3, stride=2, padding=0)
        self.conv3 = nn.Conv2d(f, f, 3, padding=1)
        if not light:
            self.conv3_ = nn.Conv2d(f, f, 3, padding=1)
        self.conv4 = nn.Conv2d(f, n_feats, 1)

    def coarse(self, c1: torch.Tensor) -> torch.Tensor:
        """The coarse attention map from the strided features ``c1 = conv2(conv1(x))``."""
        v_max = F.max_pool2d(c1, kernel_size=7, stride=3)
        if self.light:
            return self.conv3(v_max)
        return self.conv3_(torch.relu(self.conv3(torch.relu(self.conv_max(v_max)))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c1_ = self.conv1(x)
        sync = self.__dict__.get("tile_sync")  # srkd.infer.esasync while tiling: image-wide maps
        if sync is not None and sync.active:
            c3 = sync.attention(self, c1_)
        else:
            c3 = F.interpolate(self.coarse(self.conv2(c1_)), (x.size(2), x.size(3)), mode="bilinear", align_corners=False)
        return x * torch.sigmoid(self.conv4(c3 + self.conv_f(c1_)))


class ColourUpsampler(nn.Sequential):
    """One conv to ``3*s*s`` channels and PixelShuffle(s): the upsampler of IMDN, RFDN, RLFN, SPAN."""

    def __init__(self, n_feats: int, scale: int, out_channels: int = 3):
        super().__init__(nn.Conv2d(n_feats, out_channels * scale * scale, 3, padding=1), nn.PixelShuffle(scale))
