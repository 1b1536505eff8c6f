"""PSNR and SSIM exactly as the SR literature computes them (ecosystem.md §A.2).

1. quantize the output: round(clamp(x * 255, 0, 255)) to uint8;
2. Y of ITU-R BT.601 (MATLAB ``rgb2ycbcr``) in float, not rounded: 16 + (65.481 R + 128.553 G + 24.966 B) / 255;
3. shave ``scale`` pixels from every border;
4. PSNR with peak 255 in float64; SSIM with an 11x11 Gaussian window (sigma 1.5), C1 = (0.01*255)^2,
   C2 = (0.03*255)^2, 'valid' filtering, mean of the map (per channel, averaged, for RGB);
5. the dataset score is the mean of the per-image scores.
Grayscale images are replicated to three channels first, as EDSR-PyTorch does.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

_Y_COEFFS = np.array([65.481, 128.553, 24.966], dtype=np.float64) / 255.0


def quantize(sr: torch.Tensor) -> np.ndarray:
    """A [0, 1] float image (CxHxW or 1xCxHxW tensor) -> uint8 HxWxC numpy array."""
    if sr.ndim == 4:
        sr = sr[0]
    return sr.detach().float().mul(255).clamp_(0, 255).round_().to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def _as_rgb(img: np.ndarray) -> np.ndarray:
    if img.ndim == 2:
        img = img[..., None]
    if img.shape[2] in (1, 2):  # gray, or gray + alpha
        img = np.repeat(img[..., :1], 3, axis=2)
    return img[..., :3]


def rgb_to_y(img: np.ndarray) -> np.ndarray:
    """BT.601 studio-swing luma of an RGB image with values 0..255 -> float64 HxW in [16, 235]."""
    return 16.0 + _as_rgb(img).astype(np.float64) @ _Y_COEFFS


def _prepare(sr: np.ndarray, hr: np.ndarray, shave: int, y: bool) -> tuple[np.ndarray, np.ndarray]:
    if sr.shape[:2] != hr.shape[:2]:
        raise ValueError(f"size mismatch: SR {sr.shape} vs HR {hr.shape}")
    a, b = (rgb_to_y(sr), rgb_to_y(hr)) if y else (_as_rgb(sr).astype(np.float64), _as_rgb(hr).astype(np.float64))
    if shave:
        a, b = a[shave:-shave, shave:-shave], b[shave:-shave, shave:-shave]
    return a, b


def psnr(sr: np.ndarray, hr: np.ndarray, shave: int, y: bool = True) -> float:
    """PSNR (dB, peak 255) between two uint8 images after shaving ``shave`` border pixels."""
    a, b = _prepare(sr, hr, shave, y)
    mse = np.mean((a - b) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def _ssim_plane(a: np.ndarray, b: np.ndarray) -> float:
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    g = cv2.getGaussianKernel(11, 1.5)
    window = g @ g.T

    def filt(x):  # 'valid' part of the correlation: drop 5 pixels on each side
        return cv2.filter2D(x, -1, window)[5:-5, 5:-5]

    mu_a, mu_b = filt(a), filt(b)
    var_a = filt(a * a) - mu_a**2
    var_b = filt(b * b) - mu_b**2
    cov = filt(a * b) - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(ssim_map.mean())


def ssim(sr: np.ndarray, hr: np.ndarray, shave: int, y: bool = True) -> float:
    """SSIM (Wang et al. 2004, MATLAB ``ssim_index`` settings) after shaving ``shave`` pixels."""
    a, b = _prepare(sr, hr, shave, y)
    if a.shape[0] < 11 or a.shape[1] < 11:
        raise ValueError(f"image too small for an 11x11 SSIM window after shaving: {a.shape[:2]}")
    if a.ndim == 2:
        return _ssim_plane(a, b)
    return float(np.mean([_ssim_plane(a[..., c], b[..., c]) for c in range(a.shape[2])]))
