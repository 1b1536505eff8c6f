"""Output encoders round-trip exactly, and folder runs are pipelined without changing a byte."""

from __future__ import annotations

import importlib
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import run_cli
from srkd.errors import SrkdError
from srkd.io.images import read_image, write_image

up = importlib.import_module("srkd.upscale_batch")  # files, folders and the pipeline
RNG = np.random.default_rng(0)


def _img(shape, dtype=np.uint8):
    hi = 65535 if dtype == np.uint16 else 255
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    base = (np.sin(xx / 5.0) * np.cos(yy / 7.0) + 1) / 2 * hi
    img = base[..., None] if len(shape) == 3 else base
    if len(shape) == 3:
        img = np.repeat(img, shape[2], axis=2) * np.linspace(0.4, 1, shape[2])
    noise = RNG.integers(0, hi // 16, size=shape)
    return np.clip(img + noise, 0, hi).astype(dtype)


LOSSLESS = [
    (".png", (20, 28), np.uint8), (".png", (20, 28, 2), np.uint8), (".png", (20, 28, 3), np.uint8),
    (".png", (20, 28, 4), np.uint8), (".png", (20, 28), np.uint16), (".png", (20, 28, 3), np.uint16),
    (".png", (20, 28, 4), np.uint16), (".tiff", (20, 28, 3), np.uint8), (".tiff", (20, 28, 3), np.uint16),
    (".tiff", (20, 28, 4), np.uint16), (".bmp", (20, 28, 3), np.uint8), (".bmp", (20, 28), np.uint8),
]


@pytest.mark.parametrize("ext,shape,dtype", LOSSLESS)
@pytest.mark.parametrize("level", [None, 0, 1, 9])
def test_lossless_formats_give_back_exactly_the_written_array(ext, shape, dtype, level, tmp_path):
    a = _img(shape, dtype)
    path = write_image(tmp_path / f"x{ext}", a, png_compression=level)
    b = read_image(path)
    assert b.dtype == a.dtype and b.shape == a.shape and np.array_equal(a, b)


def test_webp_quality_100_is_lossless_and_lossy_formats_keep_their_declared_loss(tmp_path):
    a = _img((32, 40, 3))
    assert np.array_equal(read_image(write_image(tmp_path / "l.webp", a, quality=100)), a)
    rgba = _img((32, 40, 4))
    assert np.array_equal(read_image(write_image(tmp_path / "la.webp", rgba, quality=100)), rgba)
    for ext, q, min_psnr in ((".jpg", 95, 35.0), (".webp", 90, 30.0), (".jpg", 50, 25.0)):
        b = read_image(write_image(tmp_path / f"q{q}{ext}", a, quality=q)).astype(np.float64)
        mse = np.mean((b - a) ** 2)
        assert 10 * np.log10(255 ** 2 / mse) > min_psnr, (ext, q)


def test_png_levels_trade_size_for_time_and_bad_levels_are_refused(tmp_path):
    a = _img((96, 128, 3))
    sizes = {lv: write_image(tmp_path / f"{lv}.png", a, png_compression=lv).stat().st_size for lv in (0, 1, 9)}
    fast = write_image(tmp_path / "fast.png", a).stat().st_size
    assert sizes[9] <= sizes[1] < sizes[0] and fast < sizes[0]
    with pytest.raises(SrkdError, match="between 0 and 9"):
        write_image(tmp_path / "bad.png", a, png_compression=12)
    code, _, err = run_cli("upscale", str(tmp_path / "0.png"), "-o", str(tmp_path / "o.png"), "--png-compression", "12")
    assert code == 2 and "Traceback" not in err and "png-compression" in err


# ------------------------------------------------------------------------------------- pipeline


@pytest.fixture()
def folder(tmp_path) -> Path:
    src = tmp_path / "in"
    src.mkdir()
    for i in range(5):
        Image.fromarray(_img((12 + i, 16, 3))).save(src / f"im{i}.png")
    (src / "im2.png").write_bytes(b"not a png")  # one bad file in the middle
    return src


def test_pipelined_folder_is_byte_identical_to_sequential_and_reports_per_image(folder, tmp_path):
    seq = up.upscale_files([folder], tmp_path / "seq", pipeline=False, progress=False, precision="fp32")
    par = up.upscale_files([folder], tmp_path / "par", pipeline=True, progress=False, precision="fp32")
    assert [d[0].name for d in par.done] == [d[0].name for d in seq.done] == ["im0.png", "im1.png", "im3.png", "im4.png"]
    assert [(f[0].name) for f in par.failed] == ["im2.png"] and "cannot read image" in par.failed[0][1]
    for d in seq.done:
        assert (tmp_path / "par" / d[1].name).read_bytes() == d[1].read_bytes()
    assert not list((tmp_path / "par").glob(".*"))  # no temporary files left


def test_pipeline_keeps_at_most_one_image_in_flight_each_way(folder, tmp_path, monkeypatch):
    """Reads run at most one image ahead of the network, writes at most one behind."""
    state = {"read": 0, "net": 0, "written": 0, "max_ahead": 0, "max_behind": 0}
    lock = threading.Lock()
    real_up = up.upscale_array
    import srkd.io.images as images

    orig_read, orig_write = images.read_image, images.write_image

    def read(path):
        with lock:
            state["read"] += 1
            state["max_ahead"] = max(state["max_ahead"], state["read"] - state["net"])
        return orig_read(path)

    def write(*a, **k):
        time.sleep(0.05)  # a slow disk: the network must not run ahead by more than one image
        out = orig_write(*a, **k)
        with lock:
            state["written"] += 1
        return out

    def net(*a, **k):
        with lock:
            state["net"] += 1
            state["max_behind"] = max(state["max_behind"], state["net"] - 1 - state["written"])
        return real_up(*a, **k)

    monkeypatch.setattr(images, "read_image", read)
    monkeypatch.setattr(images, "write_image", write)
    monkeypatch.setattr(up, "upscale_array", net)
    rep = up.upscale_files([folder], tmp_path / "o", pipeline=True, progress=False, precision="fp32")
    assert len(rep.done) == 4 and len(rep.failed) == 1
    assert state["max_ahead"] <= 2  # the image being computed plus one decoded ahead
    assert state["max_behind"] <= 1  # at most one output waiting to be written
    assert state["written"] == 4


def test_cli_folder_with_a_corrupt_image_in_the_middle(folder, tmp_path):
    out = tmp_path / "cli"
    code, stdout, stderr = run_cli("upscale", str(folder), "-o", str(out) + "/", "--precision", "fp32", "-q")
    assert code == 1
    assert "im2.png" in stderr and "cannot read image" in stderr and "Traceback" not in stderr
    assert sorted(p.name for p in out.iterdir()) == ["im0_x4.png", "im1_x4.png", "im3_x4.png", "im4_x4.png"]
