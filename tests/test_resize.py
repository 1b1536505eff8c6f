"""MATLAB-bicubic: bit-exact against the MATLAB-made Set5 LR files, plus sanity of the float path."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import data_path
from srkd.data.resize import downscale_uint8, imresize, modcrop, weight_matrix

NAMES = ("baby", "bird", "butterfly", "head", "woman")


def _rgb(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.mark.data
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_downscale_uint8_reproduces_matlab_set5_lr_exactly(scale):
    root = data_path("benchmarks", "Set5")
    for name in NAMES:
        hr = modcrop(_rgb(root / "HR" / f"{name}.png"), scale)
        want = _rgb(root / "LR_bicubic" / f"X{scale}" / f"{name}x{scale}.png")
        got = downscale_uint8(hr, scale)
        assert got.shape == want.shape, name
        assert int((got != want).sum()) == 0, f"{name} x{scale}: {(got != want).sum()} pixels differ"


@pytest.mark.data
def test_x8_files_match_the_variant_without_rounding_between_passes():
    """MANIFEST.md: Set5 X8 was made with a float intermediate and one final rounding."""
    root = data_path("benchmarks", "Set5")
    per_pass_differs = 0
    for name in NAMES:
        hr = modcrop(_rgb(root / "HR" / f"{name}.png"), 8)
        want = _rgb(root / "LR_bicubic" / "X8" / f"{name}x8.png")
        x = torch.from_numpy(hr.astype(np.float64)).permute(2, 0, 1)
        y = imresize(x, 1 / 8).permute(1, 2, 0)
        once = torch.floor(y + 0.5).clamp(0, 255).to(torch.uint8).numpy()
        assert int((once != want).sum()) == 0, name
        per_pass_differs += int((downscale_uint8(hr, 8) != want).sum())
    # The two variants really are different, so the check above can tell them apart.
    assert per_pass_differs > 0


def test_rounding_is_half_away_from_zero_between_passes():
    # A 2x1 column [0, 1] downscaled x2 by rows gives exactly 0.5 (symmetric weights): MATLAB
    # rounds it up to 1, numpy's half-to-even would give 0.
    img = np.zeros((2, 2), np.uint8)
    img[1] = 1
    assert downscale_uint8(img, 2).tolist() == [[1]]


def test_weight_rows_sum_to_one_and_shapes_are_ceil():
    for n, s in [(10, 0.5), (7, 1 / 3), (5, 3.0), (9, 2.0), (1, 4.0)]:
        m = weight_matrix(n, s)
        assert m.shape == (int(np.ceil(n * s)), n)
        torch.testing.assert_close(m.sum(1), torch.ones(m.shape[0], dtype=m.dtype))
    x = torch.rand(2, 3, 7, 5)
    assert imresize(x, 1 / 3).shape == (2, 3, 3, 2)
    assert imresize(x, 2.5).shape == (2, 3, 18, 13)


def test_upscaling_keeps_constants_and_interpolates_smoothly():
    const = torch.full((1, 3, 6, 9), 0.37, dtype=torch.float64)
    up = imresize(const, 4)
    assert up.shape == (1, 3, 24, 36)
    torch.testing.assert_close(up, torch.full_like(up, 0.37))
    # A linear ramp stays a linear ramp in the interior (cubic kernels reproduce linear functions).
    ramp = torch.arange(16, dtype=torch.float64).repeat(16, 1)
    up = imresize(ramp, 2)
    inner = up[:, 4:-4]
    steps = inner[:, 1:] - inner[:, :-1]
    torch.testing.assert_close(steps, torch.full_like(steps, 0.5))


def test_imresize_matches_downscale_uint8_and_is_batched():
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (3, 24, 36, 3), dtype=np.uint8)
    batch = torch.from_numpy(imgs.astype(np.float64)).permute(0, 3, 1, 2)
    out = imresize(batch, 1 / 4, round_between=True).permute(0, 2, 3, 1).to(torch.uint8).numpy()
    for i in range(3):
        assert np.array_equal(out[i], downscale_uint8(imgs[i], 4))
    f32 = imresize(batch.float() / 255, 1 / 4)
    assert f32.dtype == torch.float32 and f32.shape == (3, 3, 6, 9)


def test_modcrop_numpy_and_tensor():
    a = np.zeros((13, 10, 3), np.uint8)
    assert modcrop(a, 4).shape == (12, 8, 3)
    assert modcrop(a[..., 0], 3).shape == (12, 9)
    assert modcrop(torch.zeros(2, 3, 13, 10), 4).shape == (2, 3, 12, 8)


def test_rejects_bad_inputs():
    with pytest.raises(TypeError):
        imresize(torch.zeros(4, 4, dtype=torch.uint8), 0.5)
    with pytest.raises(TypeError):
        downscale_uint8(np.zeros((4, 4), np.float32), 2)
