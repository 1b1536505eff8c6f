"""Training pairs: sources, LR cache, aligned patches, augmentation, deterministic sampling."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from srkd.data import patches as P
from srkd.errors import SrkdError


def _save(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def _nearest_pair(rng, h, w, s):
    """An LR image and its nearest-neighbour HR: every HR patch is the LR patch repeated s x s."""
    lr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    return lr, np.repeat(np.repeat(lr, s, 0), s, 1)


@pytest.fixture
def paired(tmp_path):
    rng = np.random.default_rng(1)
    lines = []
    for i, (h, w) in enumerate([(30, 40), (25, 33)]):
        lr, hr = _nearest_pair(rng, h, w, 2)
        _save(tmp_path / "hr" / f"{i}.png", hr)
        _save(tmp_path / "lr" / f"{i}.png", lr)
        lines.append(f"hr/{i}.png\tlr/{i}.png")
    lst = tmp_path / "pairs.txt"
    lst.write_text("# hr lr\n" + "\n".join(lines) + "\n")
    return lst


def _find(img, patch):
    windows = np.lib.stride_tricks.sliding_window_view(img, patch.shape)
    return bool((windows == patch).all(axis=(-3, -2, -1)).any())


def test_patches_are_aligned_under_every_augmentation(paired):
    ds = P.TrainingSet([paired], scale=2, patch=8)
    assert len(ds.images) == 2 and ds.images[0].hr.shape == (60, 80, 3)
    lr, hr = ds.sample(seed=3, step=1, rank=0, batch=64, augment=True)
    assert lr.shape == (64, 8, 8, 3) and hr.shape == (64, 16, 16, 3) and lr.dtype == np.uint8
    assert np.array_equal(np.repeat(np.repeat(lr, 2, 1), 2, 2), hr)
    # some patches are taken as they are, others flipped/rotated
    found = [any(_find(im.lr, p) for im in ds.images) for p in lr[:24]]
    assert any(found) and not all(found)
    lr0, _ = ds.sample(seed=3, step=1, rank=0, batch=24, augment=False)
    assert all(any(_find(im.lr, p) for im in ds.images) for p in lr0)


def test_dihedral_gives_the_eight_distinct_transforms():
    a = np.arange(12).reshape(3, 4, 1)
    outs = {P.dihedral(a, k).tobytes() + bytes(P.dihedral(a, k).shape) for k in range(8)}
    assert len(outs) == 8


def test_sampling_is_a_function_of_seed_step_rank(paired):
    ds = P.TrainingSet([paired], scale=2, patch=8)
    a = ds.sample(0, 5, 0, 4)
    assert all(np.array_equal(x, y) for x, y in zip(a, ds.sample(0, 5, 0, 4)))
    for other in (ds.sample(0, 6, 0, 4), ds.sample(0, 5, 1, 4), ds.sample(1, 5, 0, 4)):
        assert not np.array_equal(a[0], other[0])


def test_prefetch_threads_give_the_same_batches(paired):
    ds = P.TrainingSet([paired], scale=2, patch=8)
    inline = P.Batches(ds, 0, 0, 4, True, start=1, workers=0)
    ahead = P.Batches(ds, 0, 0, 4, True, start=1, workers=2)
    try:
        for step in range(1, 7):
            assert np.array_equal(inline.get(step)[1], ahead.get(step)[1])
    finally:
        ahead.close()


def test_small_images_are_skipped_and_counted(tmp_path):
    rng = np.random.default_rng(0)
    _save(tmp_path / "big.png", rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    _save(tmp_path / "small.png", rng.integers(0, 256, (20, 64, 3), dtype=np.uint8))
    ds = P.TrainingSet([tmp_path], scale=2, patch=16)
    assert [im.name for im in ds.images] == ["big"] and ds.skipped == ["small"]
    with pytest.raises(SrkdError, match="smaller than the LR patch"):
        P.TrainingSet([tmp_path], scale=2, patch=40)


def test_bad_sources(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SrkdError, match="no PNG, BMP or JPEG images"):
        P.TrainingSet([tmp_path / "empty"], 2, 8)
    with pytest.raises(SrkdError, match="not found"):
        P.TrainingSet([tmp_path / "missing"], 2, 8)
    with pytest.raises(SrkdError, match="no training data"):
        P.TrainingSet([], 2, 8)
    (tmp_path / "list.txt").write_text("nothere.png\n")
    with pytest.raises(SrkdError, match="list.txt:1: image not found"):
        P.TrainingSet([tmp_path / "list.txt"], 2, 8)
    (tmp_path / "broken.png").write_bytes(b"not an image")
    with pytest.raises(SrkdError, match="cannot read image"):
        P.TrainingSet([tmp_path / "broken.png"], 2, 8)


def test_lr_is_matlab_bicubic_of_modcropped_hr_and_cached(tmp_path, monkeypatch):
    from srkd.data.resize import downscale_uint8, modcrop

    rng = np.random.default_rng(2)
    hr = rng.integers(0, 256, (67, 50, 3), dtype=np.uint8)
    _save(tmp_path / "img" / "a.png", hr)
    ds = P.TrainingSet([tmp_path / "img"], scale=3, patch=8)
    want_hr = modcrop(hr, 3)
    assert np.array_equal(ds.images[0].hr, want_hr)
    assert np.array_equal(ds.images[0].lr, downscale_uint8(want_hr, 3))
    cached = list((P.cache_root() / "train-lr" / "x3").glob("*.npy"))
    assert len(cached) == 1

    def fail(*a, **k):
        raise AssertionError("the cached LR should have been used")

    monkeypatch.setattr(P, "make_lr", fail)
    again = P.TrainingSet([tmp_path / "img"], scale=3, patch=8)
    assert np.array_equal(again.images[0].lr, ds.images[0].lr)


def test_div2k_layout_uses_official_lr(tmp_path):
    rng = np.random.default_rng(3)
    lr, hr = _nearest_pair(rng, 20, 24, 2)
    _save(tmp_path / "DIV2K" / "DIV2K_train_HR" / "0001.png", hr)
    _save(tmp_path / "DIV2K" / "DIV2K_train_LR_bicubic" / "X2" / "0001x2.png", lr)
    pairs = P.discover(tmp_path / "DIV2K", 2)
    assert [p.lr.name for p in pairs] == ["0001x2.png"]
    ds = P.TrainingSet([tmp_path / "DIV2K"], 2, 8)
    assert np.array_equal(ds.images[0].lr, lr)
    _save(tmp_path / "DIV2K" / "DIV2K_train_LR_bicubic" / "X2" / "0001x2.png", lr[:10])
    with pytest.raises(SrkdError, match="is it the X2 folder"):
        P.TrainingSet([tmp_path / "DIV2K"], 2, 8)


def test_memmap_cache_equals_memory(paired):
    mem = P.TrainingSet([paired], 2, 8, cache="memory")
    mm = P.TrainingSet([paired], 2, 8, cache="memmap")
    assert isinstance(mm.images[0].hr, np.memmap)
    assert all(np.array_equal(a, b) for a, b in zip(mem.sample(0, 1, 0, 8), mm.sample(0, 1, 0, 8)))
    again = P.TrainingSet([paired], 2, 8, cache="memmap")  # second open reads the cache file
    assert np.array_equal(again.images[1].lr, mem.images[1].lr)
