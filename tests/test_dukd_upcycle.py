"""DUKD's pure pieces: invertible augmentations (and the official revert-order bug), zoom-in tile
geometry, zoom-out against an independent MATLAB-bicubic reference. Tiny tensors, CPU."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import data_path
from srkd.distill.upcycle import (
    OPS,
    augment,
    draw_augmentations,
    official_revert_error_rate,
    revert,
    revert_official,
    zoom_in,
    zoom_out,
)
from srkd.errors import SrkdError


COMBOS = list(itertools.product([False, True], repeat=4))  # 16 rows, columns in OPS order


def _dyadic(b, c=3, h=6, w=6, seed=0):
    # Multiples of 1/256: 1 - x is then exact in float32, so "exact" can mean bit-identical.
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 257, (b, c, h, w), generator=g).float() / 256


def _numpy_augment(img: np.ndarray, combo) -> np.ndarray:
    """Independent reference for one CHW image: the ops in the official order i, h, v, t."""
    inv, fr, fc, tr = combo
    if inv:
        img = 1.0 - img
    if fr:
        img = img[:, ::-1, :]
    if fc:
        img = img[:, :, ::-1]
    if tr:
        img = np.swapaxes(img, 1, 2)
    return img


def test_ops_order_and_names():
    assert OPS == ("invert", "flip_rows", "flip_cols", "transpose")


def test_augment_matches_reference_for_all_16_combinations():
    x = _dyadic(16)
    draws = torch.tensor(COMBOS)
    y = augment(x, draws)
    for k, combo in enumerate(COMBOS):
        ref = _numpy_augment(x[k].numpy(), combo)
        np.testing.assert_array_equal(y[k].numpy(), ref)
        if any(combo):
            assert not torch.equal(y[k], x[k]), combo  # the op really changed the sample


def test_revert_restores_input_exactly_for_all_16_combinations():
    x = _dyadic(16)
    draws = torch.tensor(COMBOS)
    back = revert(augment(x, draws), draws)
    for k, combo in enumerate(COMBOS):
        assert torch.equal(back[k], x[k]), f"combination {dict(zip(OPS, combo))} not restored"


def test_revert_on_arbitrary_floats_within_one_ulp():
    g = torch.Generator().manual_seed(3)
    x = torch.rand(16, 3, 5, 5, generator=g)
    draws = torch.tensor(COMBOS)
    back = revert(augment(x, draws), draws)
    geometric_only = ~draws[:, 0]
    assert torch.equal(back[geometric_only], x[geometric_only])
    assert (back - x).abs().max().item() <= 2 ** -24  # 1 - (1 - x) rounds at most once


def test_official_revert_rotates_180_exactly_when_transpose_and_one_flip():
    x = _dyadic(16, h=5, w=5, seed=1)
    draws = torch.tensor(COMBOS)
    official = revert_official(augment(x, draws), draws)
    broken = []
    for k, (inv, fr, fc, tr) in enumerate(COMBOS):
        if tr and (fr != fc):
            broken.append(k)
            assert torch.equal(official[k], torch.rot90(x[k], 2, dims=(-2, -1)))
            assert not torch.equal(official[k], x[k])
        else:
            assert torch.equal(official[k], x[k])
    assert len(broken) == 4  # {no invert, invert} x {rows only, cols only} with transpose

    # The share of zoom-in samples hit at probability p, summed over the 16 combinations.
    p = 0.3
    share = sum(math.prod(p if on else 1 - p for on in COMBOS[k]) for k in broken)
    assert share == pytest.approx(official_revert_error_rate(p)) == pytest.approx(0.126)


def test_draws_are_per_sample_bernoulli():
    torch.manual_seed(0)
    d = draw_augmentations(20000, 0.3)
    assert d.shape == (20000, 4) and d.dtype == torch.bool
    np.testing.assert_allclose(d.float().mean(0).numpy(), 0.3, atol=0.015)
    assert not draw_augmentations(50, 0.0).any() and draw_augmentations(50, 1.0).all()
    with pytest.raises(SrkdError):
        draw_augmentations(4, 1.5)


def test_transpose_needs_square_inputs():
    x = torch.rand(2, 3, 4, 6)
    on = torch.tensor([[False, True, True, False], [True, False, False, False]])
    assert torch.equal(revert(augment(x, on), on), x)  # no transpose: any shape
    with pytest.raises(SrkdError, match="square"):
        augment(x, torch.tensor([[False, False, False, True], [False] * 4]))


def test_gradient_passes_through_augment_and_revert():
    x = torch.rand(16, 3, 4, 4, requires_grad=True)
    draws = torch.tensor(COMBOS)
    w = torch.rand(16, 3, 4, 4)
    (revert(augment(x, draws), draws) * w).sum().backward()
    # revert o augment is the identity map (invert twice: slope (-1)^2 = 1)
    torch.testing.assert_close(x.grad, w)


# ----------------------------------------------------------------------------- zoom-in


@pytest.mark.parametrize("scale,h,w,n", [(2, 4, 4, 2), (3, 3, 5, 9), (4, 2, 3, 1)])
def test_zoom_in_tiles_come_from_the_right_places(scale, h, w, n):
    b = 3
    hr = torch.rand(b, 3, h * scale, w * scale)
    tiles, positions = zoom_in(hr, (h, w), scale, n)
    assert tiles.shape == (n * b, 3, h, w)
    assert len(set(positions)) == n and all(0 <= i < scale and 0 <= j < scale for i, j in positions)
    hr_np = hr.numpy()
    for k, (i, j) in enumerate(positions):
        ref = hr_np[:, :, i * h:(i + 1) * h, j * w:(j + 1) * w]
        np.testing.assert_array_equal(tiles[k * b:(k + 1) * b].numpy(), ref)


def test_zoom_in_covers_the_grid_and_checks_arguments():
    hr = torch.rand(1, 3, 12, 12)
    seen = set()
    torch.manual_seed(0)
    for _ in range(200):
        seen.update(zoom_in(hr, (3, 3), 4, 1)[1])
    assert seen == {(i, j) for i in range(4) for j in range(4)}
    with pytest.raises(SrkdError, match="n_gt_sub"):
        zoom_in(hr, (3, 3), 4, 17)
    with pytest.raises(SrkdError, match="HR patch"):
        zoom_in(hr, (4, 3), 4, 1)


# ----------------------------------------------------------------------------- zoom-out


def _cubic(x):
    ax = np.abs(x)
    return ((1.5 * ax**3 - 2.5 * ax**2 + 1) * (ax <= 1)
            + (-0.5 * ax**3 + 2.5 * ax**2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2)))


def _matlab_weights(n_in: int, scale: float) -> np.ndarray:
    """MATLAB imresize 'bicubic' (antialiased) as an (n_out, n_in) matrix, written from its
    documented definition: kernel stretched by 1/scale, symmetric edge padding."""
    n_out = int(math.ceil(n_in * scale))
    width = 4.0 / scale if scale < 1 else 4.0
    m = np.zeros((n_out, n_in))
    for i in range(1, n_out + 1):
        u = i / scale + 0.5 * (1 - 1 / scale)
        left = math.floor(u - width / 2)
        idx = left + np.arange(int(math.ceil(width)) + 2)
        wts = scale * _cubic(scale * (u - idx)) if scale < 1 else _cubic(u - idx)
        wts = wts / wts.sum()
        for j, wt in zip(idx, wts):
            jj = j - 1
            while jj < 0 or jj >= n_in:  # symmetric padding
                jj = -jj - 1 if jj < 0 else 2 * n_in - jj - 1
            m[i - 1, jj] += wt
    return m


def _ref_down(img: np.ndarray, scale: int, uint8: bool = False) -> np.ndarray:
    """img: (..., H, W) float64 -> MATLAB imresize(img, 1/scale): rows first, then columns.

    ``uint8`` mimics MATLAB on uint8 images (how benchmark LR files are made): each pass is
    rounded half away from zero. Float inputs (the zoom-out case) are not rounded."""
    rows = _matlab_weights(img.shape[-2], 1.0 / scale)
    cols = _matlab_weights(img.shape[-1], 1.0 / scale)
    q = (lambda a: np.clip(np.floor(a + 0.5), 0, 255)) if uint8 else (lambda a: a)
    return q(np.einsum("...hw,jw->...hj", q(np.einsum("ih,...hw->...iw", rows, img)), cols))


def test_reference_matches_matlab_made_set5_lr():
    # The reference itself against MATLAB's own output (uint8 LR files of the benchmark).
    root = data_path("benchmarks", "Set5")
    for name in ("butterfly", "bird"):
        hr = np.asarray(Image.open(root / "HR" / f"{name}.png").convert("RGB"), dtype=np.float64)
        lr = np.asarray(Image.open(root / "LR_bicubic" / "X4" / f"{name}x4.png").convert("RGB"), dtype=np.float64)
        ours = _ref_down(hr.transpose(2, 0, 1), 4, uint8=True).transpose(1, 2, 0)
        assert ours.shape == lr.shape
        np.testing.assert_array_equal(ours, lr)


@pytest.mark.parametrize("scale,size", [(2, 10), (3, 12), (4, 16), (4, 18)])
def test_zoom_out_is_the_matlab_downscale_of_the_lr_patch(scale, size):
    g = torch.Generator().manual_seed(scale)
    lr = torch.rand(2, 3, size, size, generator=g)
    small, label = zoom_out(lr, scale)
    crop = size - size % scale
    assert torch.equal(label, lr[..., :crop, :crop])
    assert small.shape == (2, 3, crop // scale, crop // scale)
    ref = _ref_down(label.double().numpy(), scale)
    np.testing.assert_allclose(small.double().numpy(), ref, atol=2e-6)

    from srkd.data.resize import imresize

    assert torch.equal(small, imresize(label, 1.0 / scale))


def test_zoom_out_ignores_autocast_and_rejects_tiny_patches():
    lr = torch.rand(1, 3, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        small, _ = zoom_out(lr, 2)
    assert small.dtype == torch.float32
    np.testing.assert_allclose(small.double().numpy(), _ref_down(lr.double().numpy(), 2), atol=2e-6)
    with pytest.raises(SrkdError, match="zoom-out"):
        zoom_out(torch.rand(1, 3, 3, 3), 4)
