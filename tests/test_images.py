"""Image I/O: what the file holds comes back (depth, channels, orientation); bad files fail in one line."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageOps

from srkd.errors import SrkdError
from srkd.io.images import read_image, read_rgb_uint8, to_rgb_uint8, write_image

RNG = np.random.default_rng(7)
CASES = {
    "rgb8.png": RNG.integers(0, 256, (9, 11, 3), dtype=np.uint8),
    "rgb16.png": RNG.integers(0, 65536, (9, 11, 3), dtype=np.uint16),
    "gray8.png": RNG.integers(0, 256, (9, 11), dtype=np.uint8),
    "gray16.png": RNG.integers(0, 65536, (9, 11), dtype=np.uint16),
    "graya8.png": RNG.integers(0, 256, (9, 11, 2), dtype=np.uint8),
    "rgba8.png": RNG.integers(0, 256, (9, 11, 4), dtype=np.uint8),
    "rgba16.png": RNG.integers(0, 65536, (9, 11, 4), dtype=np.uint16),
    "rgb16.tiff": RNG.integers(0, 65536, (9, 11, 3), dtype=np.uint16),
    "rgba8.tif": RNG.integers(0, 256, (9, 11, 4), dtype=np.uint8),
    "rgb8.bmp": RNG.integers(0, 256, (9, 11, 3), dtype=np.uint8),
    "rgba8.webp": RNG.integers(0, 256, (9, 11, 4), dtype=np.uint8),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_lossless_round_trips_keep_depth_and_channels(tmp_path, name):
    arr = CASES[name]
    write_image(tmp_path / name, arr, quality=100)
    back = read_image(tmp_path / name)
    assert back.dtype == arr.dtype and back.shape == arr.shape
    assert np.array_equal(back, arr)


def test_jpeg_round_trip_is_close(tmp_path):
    smooth = np.tile(np.linspace(0, 255, 32, dtype=np.uint8), (24, 1))[..., None].repeat(3, axis=2)
    write_image(tmp_path / "a.jpg", smooth, quality=95)
    back = read_image(tmp_path / "a.jpg")
    assert back.shape == smooth.shape and np.abs(back.astype(int) - smooth).max() <= 4


def test_exif_orientation_is_applied_to_jpeg(tmp_path):
    arr = np.zeros((10, 20, 3), np.uint8)
    arr[:, :5] = 255  # white band on the left of the stored pixels
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    img.save(tmp_path / "r.jpg", exif=exif, quality=100)
    out = read_image(tmp_path / "r.jpg")
    assert out.shape == (20, 10, 3)
    assert out[:5].mean() > 200 and out[-5:].mean() < 50  # the band is now at the top


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_on_the_16bit_path_matches_pil(tmp_path, orientation):
    """16-bit colour goes through OpenCV, which ignores EXIF; srkd applies it the way PIL does."""
    arr16 = RNG.integers(0, 65536, (5, 7, 3), dtype=np.uint16)
    write_image(tmp_path / "a.png", arr16)
    data = bytearray((tmp_path / "a.png").read_bytes())
    exif = Image.Exif()
    exif[0x0112] = orientation
    payload = exif.tobytes()
    chunk = b"eXIf" + payload
    import struct
    import zlib

    # Insert an eXIf chunk right after IHDR (8-byte signature + 25-byte IHDR chunk).
    blob = struct.pack(">I", len(payload)) + chunk + struct.pack(">I", zlib.crc32(chunk))
    (tmp_path / "o.png").write_bytes(bytes(data[:33]) + blob + bytes(data[33:]))
    got = read_image(tmp_path / "o.png")
    assert got.dtype == np.uint16
    # Reference: PIL's transpose of an 8-bit image holding the pixel indices.
    idx = np.arange(35, dtype=np.uint8).reshape(5, 7)
    img = Image.fromarray(idx)
    pil_exif = img.getexif()
    pil_exif[0x0112] = orientation
    img.save(tmp_path / "ref.png", exif=pil_exif)
    order = np.asarray(ImageOps.exif_transpose(Image.open(tmp_path / "ref.png"))).astype(int)
    assert np.array_equal(got, arr16.reshape(35, 3)[order])


def test_palette_and_colour_key_transparency_become_alpha(tmp_path):
    p = Image.new("P", (4, 3))
    p.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    p.putpixel((1, 1), 1)
    p.save(tmp_path / "p.png", transparency=0)
    out = read_image(tmp_path / "p.png")
    assert out.shape == (3, 4, 4) and out[1, 1].tolist() == [0, 255, 0, 255] and out[0, 0, 3] == 0
    Image.new("P", (4, 3)).save(tmp_path / "opaque.png")
    assert read_image(tmp_path / "opaque.png").shape == (3, 4, 3)
    Image.new("1", (4, 3), 1).save(tmp_path / "bilevel.png")
    assert read_image(tmp_path / "bilevel.png").tolist() == np.full((3, 4), 255).tolist()


def test_read_rgb_uint8_conventions(tmp_path):
    assert to_rgb_uint8(np.array([[0, 128, 129, 65535]], np.uint16)).tolist() == [[[v] * 3 for v in (0, 0, 1, 255)]]
    rgba = CASES["rgba8.png"]
    write_image(tmp_path / "a.png", rgba)
    assert np.array_equal(read_rgb_uint8(tmp_path / "a.png"), rgba[..., :3])
    write_image(tmp_path / "g.png", CASES["gray8.png"])
    g = read_rgb_uint8(tmp_path / "g.png")
    assert g.shape == (9, 11, 3) and all(np.array_equal(g[..., c], CASES["gray8.png"]) for c in range(3))
    write_image(tmp_path / "la.png", CASES["graya8.png"])
    assert np.array_equal(read_rgb_uint8(tmp_path / "la.png")[..., 1], CASES["graya8.png"][..., 0])


def test_unreadable_files_raise_one_line_errors(tmp_path):
    good = tmp_path / "good.png"
    write_image(good, CASES["rgb8.png"])
    data = good.read_bytes()
    (tmp_path / "truncated.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.jpg").write_text("hello")
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "header.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 30)
    for name in ("truncated.png", "text.jpg", "empty.png", "header.png", "missing.png"):
        with pytest.raises(SrkdError, match=f"cannot read image .*{name}") as info:
            read_image(tmp_path / name)
        assert "\n" not in str(info.value)


def test_write_refuses_what_the_format_cannot_store(tmp_path):
    cases = [
        ("a.jpg", CASES["rgb16.png"], "16-bit"),
        ("a.webp", CASES["rgb16.png"], "16-bit"),
        ("a.jpg", CASES["rgba8.png"], "transparency"),
        ("a.bmp", CASES["graya8.png"], "transparency"),
        ("a.gif", CASES["rgb8.png"], "unknown image extension"),
        ("a.png", CASES["rgb8.png"].astype(np.float32), "uint8 or uint16"),
        ("a.png", np.zeros((4, 4, 5), np.uint8), "shape"),
    ]
    for name, arr, message in cases:
        with pytest.raises(SrkdError, match=message):
            write_image(tmp_path / name, arr)
    assert list(tmp_path.iterdir()) == []  # nothing half-written
    write_image(tmp_path / "a.png", CASES["rgb8.png"])
    with pytest.raises(SrkdError, match="already exists"):
        write_image(tmp_path / "a.png", CASES["gray8.png"])
    write_image(tmp_path / "a.png", CASES["gray8.png"], overwrite=True)
    assert read_image(tmp_path / "a.png").ndim == 2
