"""Crops of a bundled benchmark image (Set5 butterfly: edges, texture, flat areas) for the checks
that must run on real pixels: the Upscaler's precision check, the export parity check, and the
accuracy check of ``--backend auto``."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from ..errors import SrkdError

ASSETS = Path(__file__).resolve().parents[1] / "assets"


def real_image_crop(size: int = 48) -> torch.Tensor:
    """A crop of a bundled benchmark image (edges, texture, flat areas) for the precision check."""
    import cv2

    path = ASSETS / "benchmarks" / "Set5" / "LR_bicubic" / "X2" / "butterflyx2.png"
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:  # assets stripped from the install: a synthetic image still exercises the range
        g = torch.linspace(0, 1, size)
        return torch.stack([g.view(1, -1).expand(size, size), g.view(-1, 1).expand(size, size), (g.view(1, -1) * g.view(-1, 1))]).unsqueeze(0)
    y0, x0 = (img.shape[0] - size) // 2, (img.shape[1] - size) // 2
    crop = img[y0 : y0 + size, x0 : x0 + size, ::-1].copy()
    return torch.from_numpy(crop).permute(2, 0, 1).unsqueeze(0).float() / 255.0


def psnr_float(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a.double() - b.double()) ** 2).mean())
    return float("inf") if mse == 0 else -10.0 * math.log10(mse)


def quality_crop(scale: int, size: int = 48) -> tuple[torch.Tensor, torch.Tensor]:
    """(LR, HR) of a bundled benchmark image: an HR crop and its MATLAB-bicubic LR, in [0, 1]."""
    import cv2
    import numpy as np

    from .resize import imresize

    path = ASSETS / "benchmarks" / "Set5" / "HR" / "butterfly.png"
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise SrkdError(f"the bundled check image {path} is missing; reinstall srkd")
    side = size * scale
    y0, x0 = (img.shape[0] - side) // 2, (img.shape[1] - side) // 2
    hr = torch.from_numpy(np.ascontiguousarray(img[y0 : y0 + side, x0 : x0 + side, ::-1])).permute(2, 0, 1).double()
    lr = imresize(hr, 1.0 / scale, round_between=True).clamp(0, 255).round()
    return (lr / 255).float().unsqueeze(0), (hr / 255).float().unsqueeze(0)
