"""Named benchmark sets: layouts, official vs generated LR, the LR cache, HR cropping, errors."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
from PIL import Image

from conftest import data_path
from srkd.data import benchmarks as B
from srkd.data.resize import downscale_uint8, modcrop
from srkd.errors import SrkdError
from srkd.io.images import read_rgb_uint8


def _no_downscale(*args, **kwargs):
    raise AssertionError("LR should not have been computed here")


def _save(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


@pytest.mark.data
def test_set5_x4_uses_the_official_lr_files(monkeypatch):
    root = data_path()
    monkeypatch.setattr(B, "downscale_uint8", _no_downscale)
    bench = B.open_benchmark("set5", 4, root)
    assert (bench.name, bench.scale, len(bench)) == ("Set5", 4, 5)
    samples = list(bench)
    assert [s.name for s in samples] == ["baby", "bird", "butterfly", "head", "woman"]
    lr_dir = root / "benchmarks" / "Set5" / "LR_bicubic" / "X4"
    for s in samples:
        assert np.array_equal(s.lr, read_rgb_uint8(lr_dir / f"{s.name}x4.png"))
        assert s.hr.shape == (s.lr.shape[0] * 4, s.lr.shape[1] * 4, 3) and s.hr.dtype == np.uint8
    woman = samples[-1]
    assert woman.hr.shape == (344, 228, 3)  # 228x344 is already a multiple of 4


@pytest.mark.data
def test_urban100_x4_makes_lr_once_and_serves_it_from_the_cache(monkeypatch):
    root = data_path()
    bench = B.open_benchmark("urban100", 4, root)
    assert len(bench) == 100
    first = next(iter(bench))
    hr_file = root / "benchmarks" / "Urban100" / "HR" / "img_001.png"
    want_hr = modcrop(read_rgb_uint8(hr_file), 4)
    assert np.array_equal(first.hr, want_hr)
    assert np.array_equal(first.lr, downscale_uint8(want_hr, 4))
    cached = list((B.cache_root() / "lr" / "urban100" / "X4").glob("img_001-*.png"))
    assert len(cached) == 1
    monkeypatch.setattr(B, "downscale_uint8", _no_downscale)
    again = next(iter(B.open_benchmark("urban100", 4, root)))
    assert np.array_equal(again.lr, first.lr) and np.array_equal(again.hr, first.hr)


@pytest.mark.data
@pytest.mark.parametrize("scale,size", [(2, (320, 480)), (3, (318, 480)), (4, (320, 480))])
def test_b100_crops_hr_to_lr_times_scale(scale, size):
    sample = next(iter(B.open_benchmark("b100", scale, data_path())))
    assert sorted(sample.hr.shape[:2]) == sorted(size)
    assert sample.hr.shape[0] == sample.lr.shape[0] * scale and sample.hr.shape[1] == sample.lr.shape[1] * scale


@pytest.mark.data
def test_grayscale_set14_image_is_replicated(tmp_path):
    src = data_path("benchmarks", "Set14", "HR", "bridge.png")
    assert Image.open(src).mode == "L"
    shutil.copy(src, tmp_path / "bridge.png")
    sample = next(iter(B.folder_benchmark(tmp_path, 3)))
    assert sample.hr.shape == (510, 510, 3) and sample.lr.shape == (170, 170, 3)
    assert np.array_equal(sample.hr[..., 0], sample.hr[..., 2]) and np.array_equal(sample.lr[..., 0], sample.lr[..., 1])


def test_layouts_and_names(tmp_path, monkeypatch):
    img = np.random.default_rng(0).integers(0, 256, (26, 18, 3), dtype=np.uint8)
    # EDSR layout with official LR, B100 under its BSDS100 name.
    _save(tmp_path / "edsr" / "benchmark" / "BSDS100" / "HR" / "a.png", img)
    _save(tmp_path / "edsr" / "benchmark" / "BSDS100" / "LR_bicubic" / "X2" / "ax2.png", img[:13, :9])
    bench = B.open_benchmark("BSD100", 2, tmp_path / "edsr")
    sample = next(iter(bench))
    assert bench.name == "B100" and np.array_equal(sample.lr, img[:13, :9]) and np.array_equal(sample.hr, img)
    # The root may point straight at the folder holding <Name>/HR; no LR -> MATLAB bicubic.
    _save(tmp_path / "flat" / "Set14" / "HR" / "b.png", img)
    sample = next(iter(B.open_benchmark("set14", 3, tmp_path / "flat")))
    assert np.array_equal(sample.hr, img[:24, :18]) and np.array_equal(sample.lr, downscale_uint8(img[:24, :18], 3))
    # DIV2K validation layout.
    _save(tmp_path / "d" / "DIV2K" / "DIV2K_valid_HR" / "0801.png", img)
    _save(tmp_path / "d" / "DIV2K" / "DIV2K_valid_LR_bicubic" / "X2" / "0801x2.png", img[:13, :9])
    sample = next(iter(B.open_benchmark("div2k-val", 2, tmp_path / "d")))
    assert sample.name == "0801" and np.array_equal(sample.lr, img[:13, :9])
    # Root resolution: argument, else $SRKD_DATA, else $SRKD_CACHE/data.
    monkeypatch.setenv("SRKD_DATA", str(tmp_path / "flat"))
    assert len(B.open_benchmark("set14", 2)) == 1
    monkeypatch.delenv("SRKD_DATA")
    assert B.data_root() == B.cache_root() / "data"


def test_generated_lr_cache_is_not_served_stale(tmp_path):
    rng = np.random.default_rng(1)
    a, b = (rng.integers(0, 256, (16, 16, 3), dtype=np.uint8) for _ in range(2))
    path = tmp_path / "hr" / "x.bmp"  # BMP: both versions have the same file size
    _save(path, a)
    first = next(iter(B.folder_benchmark(tmp_path / "hr", 2, name="mine")))
    stamp = path.stat().st_mtime_ns
    _save(path, b)
    os.utime(path, ns=(stamp, stamp))  # same size, same timestamp, different pixels
    second = next(iter(B.folder_benchmark(tmp_path / "hr", 2, name="mine")))
    assert np.array_equal(first.lr, downscale_uint8(a, 2)) and np.array_equal(second.lr, downscale_uint8(b, 2))
    assert len(list((B.cache_root() / "lr" / "mine" / "X2").glob("x-*.png"))) == 2


def test_errors_are_one_line_and_say_what_to_do(tmp_path):
    def err(fn, *args, match, **kwargs):
        with pytest.raises(SrkdError, match=match) as info:
            fn(*args, **kwargs)
        assert "\n" not in str(info.value)
        return str(info.value)

    msg = err(B.open_benchmark, "set6", 4, tmp_path, match="unknown dataset 'set6'")
    assert "urban100" in msg and "div2k-val" in msg
    msg = err(B.open_benchmark, "set14", 4, tmp_path, match="srkd data download set14")
    assert str(tmp_path) in msg and "Set14/HR" in msg
    err(B.open_benchmark, "set5", 0, tmp_path, match="scale")

    hr = tmp_path / "benchmark" / "Set14" / "HR"
    img = np.zeros((16, 16, 3), np.uint8)
    for i in range(2):
        _save(hr / f"im{i}.png", img)
    (hr / "names.tsv").write_text("metadata beside the images is ignored")
    (hr / ".DS_Store").write_bytes(b"\0")
    lr = hr.parent / "LR_bicubic" / "X4"
    _save(lr / "im0x4.png", img[:4, :4])
    err(B.open_benchmark, "set14", 4, tmp_path, match="no LR image for im1.png")
    _save(lr / "im1x4.png", img[:3, :4])
    bench = B.open_benchmark("set14", 4, tmp_path)
    err(list, bench, match="im1.png: LR 4x3 does not match HR 16x16 at x4")
    (hr / "im1.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    err(list, B.folder_benchmark(hr, 4), match="cannot read image .*im1.png")
    (hr / "notes.bin").write_bytes(b"x")
    err(B.folder_benchmark, hr, 4, match="notes.bin is not an image")
    err(B.folder_benchmark, tmp_path / "nowhere", 4, match="HR folder not found")
    empty = tmp_path / "empty"
    empty.mkdir()
    err(B.folder_benchmark, empty, 4, match="no HR images")
