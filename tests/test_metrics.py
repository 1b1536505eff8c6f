"""PSNR/SSIM against independent implementations (direct numpy formula, scikit-image)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from conftest import data_path
from srkd.metrics import psnr, quantize, rgb_to_y, ssim


def _degrade(hr: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    blurred = cv2.GaussianBlur(hr, (5, 5), 1.2).astype(np.int64)
    return np.clip(blurred + rng.integers(-8, 9, hr.shape), 0, 255).astype(np.uint8)


def _set5(name: str) -> np.ndarray:
    return np.asarray(Image.open(data_path("benchmarks", "Set5", "HR", f"{name}.png")).convert("RGB"))


def _y_reference(img: np.ndarray) -> np.ndarray:
    # MATLAB rgb2ycbcr on im2double input: 16/255 + [65.481 128.553 24.966]/255 * rgb, times 255.
    rgb = img.astype(np.float64) / 255.0
    return 16.0 + 65.481 * rgb[..., 0] + 128.553 * rgb[..., 1] + 24.966 * rgb[..., 2]


def test_quantize_rounds_and_clamps():
    x = torch.tensor([[[-0.2, 0.5 / 255, 1.5 / 255], [0.999, 1.0, 1.7]]])  # 1x2x3 (C, H, W)
    q = quantize(x)
    assert q.dtype == np.uint8 and q.shape == (2, 3, 1)
    # torch.round is half-to-even, as in EDSR-PyTorch's quantize: 0.5 -> 0, 1.5 -> 2.
    assert q[..., 0].tolist() == [[0, 0, 2], [255, 255, 255]]
    assert quantize(torch.zeros(1, 3, 4, 5)).shape == (4, 5, 3)


def test_rgb_to_y_is_bt601_studio_swing_in_float():
    rgb = np.array([[[0, 0, 0], [255, 255, 255], [10, 200, 30]]], np.uint8)
    y = rgb_to_y(rgb.astype(np.float64))
    assert y.dtype == np.float64
    np.testing.assert_allclose(y[0, :2], [16.0, 235.0], atol=1e-9)
    np.testing.assert_allclose(y, _y_reference(rgb), atol=1e-12)
    assert y[0, 2] != np.round(y[0, 2])  # not rounded


@pytest.mark.data
@pytest.mark.parametrize("name,shave", [("baby", 4), ("butterfly", 2), ("woman", 3)])
def test_psnr_and_ssim_match_independent_implementations(name, shave):
    from skimage.metrics import structural_similarity

    hr = _set5(name)
    sr = _degrade(hr, seed=len(name))
    ya = _y_reference(sr)[shave:-shave, shave:-shave]
    yb = _y_reference(hr)[shave:-shave, shave:-shave]
    want_psnr = 10 * np.log10(255.0**2 / np.mean((ya - yb) ** 2))
    assert abs(psnr(sr, hr, shave) - want_psnr) < 1e-9
    # skimage filters the whole plane (reflect padding) and then drops (11-1)//2 = 5 pixels per
    # border of the SSIM map, which is exactly 'valid' filtering; its Gaussian (sigma 1.5,
    # truncate 3.5 -> radius 5) is the same 11-tap window.
    want_ssim = structural_similarity(ya, yb, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                      data_range=255)
    assert abs(ssim(sr, hr, shave) - want_ssim) < 1e-9
    assert 20 < want_psnr < 40 and 0.5 < want_ssim < 0.99  # a real, imperfect reconstruction

    # RGB: PSNR over all channels' pixels, SSIM averaged over channels.
    a = sr[shave:-shave, shave:-shave].astype(np.float64)
    b = hr[shave:-shave, shave:-shave].astype(np.float64)
    assert abs(psnr(sr, hr, shave, y=False) - 10 * np.log10(255.0**2 / np.mean((a - b) ** 2))) < 1e-9
    per_channel = [structural_similarity(a[..., c], b[..., c], gaussian_weights=True, sigma=1.5,
                                         use_sample_covariance=False, data_range=255) for c in range(3)]
    assert abs(ssim(sr, hr, shave, y=False) - np.mean(per_channel)) < 1e-9


def test_identical_images_and_grayscale():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    assert psnr(img, img, 4) == float("inf")
    assert ssim(img, img, 4) == pytest.approx(1.0, abs=1e-12)
    gray = img[..., 0]
    other = np.clip(gray.astype(int) + 3, 0, 255).astype(np.uint8)
    rep = np.repeat(gray[..., None], 3, axis=2)
    rep_other = np.repeat(other[..., None], 3, axis=2)
    # (H, W), (H, W, 1) and replicated RGB are the same image (EDSR's set_channel).
    assert psnr(gray, other, 2) == psnr(rep, rep_other, 2) == psnr(gray[..., None], other[..., None], 2)
    assert ssim(gray, other, 2) == ssim(rep, rep_other, 2)
    # Alpha is not part of the score.
    alpha = np.zeros_like(gray)[..., None]
    assert psnr(np.concatenate([gray[..., None], alpha], 2), other, 2) == psnr(gray, other, 2)
    assert psnr(np.concatenate([rep, alpha], 2), rep_other, 2) == psnr(rep, rep_other, 2)


def test_shave_is_applied():
    hr = np.full((30, 30, 3), 100, np.uint8)
    sr = hr.copy()
    sr[:2] = 0  # damage only inside a 2-pixel border
    assert psnr(sr, hr, 2) == float("inf")
    assert psnr(sr, hr, 1) < 30
    with pytest.raises(ValueError):
        psnr(sr[:-1], hr, 2)
