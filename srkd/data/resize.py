"""MATLAB-compatible bicubic resizing (``imresize(img, scale, 'bicubic')``), vectorised in torch.

The benchmark LR images are MATLAB output, so training and evaluation LR must be made the same
way (ecosystem.md §A.4.1). MATLAB details reproduced here:

* Keys cubic kernel, a = -0.5; when downscaling the kernel is widened by 1/scale (antialiasing)
  and its values scaled by ``scale``; weights are normalised per output pixel.
* Output pixel x (1-based) samples input coordinate ``u = x/scale + 0.5*(1 - 1/scale)``.
* Symmetric (mirror) boundary handling, folded into the weight matrix.
* Output size ``ceil(in * scale)``; the two dimensions are resized rows (H) first, then columns.
* For uint8 images MATLAB rounds to uint8 after *each* pass, half away from zero.

Each pass is one matrix product with a dense (out x in) weight matrix, which is fast for image
sizes and keeps the code a direct transcription of the definition.
"""

from __future__ import annotations

import math

import numpy as np
import torch


def _cubic(x: torch.Tensor) -> torch.Tensor:
    ax = x.abs()
    ax2, ax3 = ax * ax, ax * ax * ax
    near = (1.5 * ax3 - 2.5 * ax2 + 1) * (ax <= 1)
    far = (-0.5 * ax3 + 2.5 * ax2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2))
    return near + far


def weight_matrix(in_len: int, scale: float, antialias: bool = True, dtype=torch.float64) -> torch.Tensor:
    """The (out_len, in_len) matrix of one MATLAB bicubic resize pass along one dimension."""
    out_len = math.ceil(in_len * scale)
    width = 4.0 / scale if (scale < 1 and antialias) else 4.0
    x = torch.arange(1, out_len + 1, dtype=dtype)
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = torch.floor(u - width / 2)
    taps = math.ceil(width) + 2
    idx = left[:, None] + torch.arange(taps, dtype=dtype)[None, :]  # 1-based input positions
    dist = u[:, None] - idx
    w = scale * _cubic(dist * scale) if (scale < 1 and antialias) else _cubic(dist)
    w = w / w.sum(dim=1, keepdim=True)
    # Symmetric padding: position p maps into [1, in_len] by mirroring, as MATLAB's
    # aux = [1:in, in:-1:1]; aux(mod(p-1, 2*in) + 1).
    mirror = torch.cat([torch.arange(in_len), torch.arange(in_len - 1, -1, -1)])
    cols = mirror[torch.remainder(idx.long() - 1, 2 * in_len)]
    mat = torch.zeros(out_len, in_len, dtype=dtype)
    mat.scatter_add_(1, cols, w)
    return mat


def _round_half_away(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * torch.floor(x.abs() + 0.5)


def imresize(x: torch.Tensor, scale: float, antialias: bool = True, round_between: bool = False) -> torch.Tensor:
    """Resize the last two dims (H, W) of a float tensor [..., H, W] like MATLAB's imresize.

    Works for any value range and batch shape; computes in the input's dtype (float64 for exact
    reproduction of uint8 files). ``round_between`` emulates MATLAB's uint8 behaviour (round
    half away from zero and clip to [0, 255] after each pass), for inputs in 0..255.
    """
    if not x.is_floating_point():
        raise TypeError("imresize expects a floating-point tensor")
    h, w = x.shape[-2:]
    wh = weight_matrix(h, scale, antialias, x.dtype).to(x.device)
    ww = weight_matrix(w, scale, antialias, x.dtype).to(x.device)
    out = torch.matmul(wh, x)  # rows (H) first
    if round_between:
        out = _round_half_away(out).clamp_(0, 255)
    out = torch.matmul(out, ww.T)
    if round_between:
        out = _round_half_away(out).clamp_(0, 255)
    return out


def modcrop(img, scale: int):
    """Top-left crop to a multiple of ``scale`` (numpy HxW[xC] or tensor [..., H, W])."""
    if isinstance(img, torch.Tensor):
        h, w = img.shape[-2:]
        return img[..., : h - h % scale, : w - w % scale]
    h, w = img.shape[:2]
    return img[: h - h % scale, : w - w % scale]


def downscale_uint8(hr: np.ndarray, scale: int) -> np.ndarray:
    """MATLAB ``imresize(hr, 1/scale, 'bicubic')`` of a uint8 image (HxW or HxWxC) -> uint8.

    ``hr`` should already be modcropped; reproduces the benchmark LR PNGs bit for bit.
    """
    if hr.dtype != np.uint8 or hr.ndim not in (2, 3):
        raise TypeError(f"downscale_uint8 expects a uint8 HxW or HxWxC array, got {hr.dtype} {hr.shape}")
    t = torch.from_numpy(hr.astype(np.float64))  # a copy: decoded images are often read-only
    t = t.permute(2, 0, 1) if t.ndim == 3 else t
    out = imresize(t, 1.0 / scale, round_between=True)
    out = out.permute(1, 2, 0) if out.ndim == 3 else out
    return out.to(torch.uint8).numpy()
