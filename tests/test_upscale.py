"""srkd.upscale and ``srkd upscale``: image kinds, batches, Python API, errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import data_path, run_cli
from PIL import Image

import srkd
from srkd.errors import SrkdError
from srkd.io.images import read_image, write_image
from srkd.upscale import fill_transparent, plan_jobs, upscale_array

ROOT = Path(__file__).resolve().parents[1]
BUNDLED_LR = ROOT / "srkd" / "assets" / "benchmarks" / "Set5" / "LR_bicubic" / "X4"


def _photo(h: int = 24, w: int = 32) -> np.ndarray:
    """A crop of a real photo (bundled Set5 LR), uint8 RGB."""
    img = np.asarray(Image.open(BUNDLED_LR / "butterflyx4.png").convert("RGB"))
    return np.ascontiguousarray(img[10 : 10 + h, 12 : 12 + w])


@pytest.fixture(scope="module")
def upscaler():
    from srkd.infer import Upscaler
    from srkd.io.hub import load_model

    return Upscaler(load_model(None).model)


def _cli(*args) -> tuple[int, str, str]:
    return run_cli("upscale", "--quiet", *map(str, args))


# ------------------------------------------------------------------------ round trips (CLI)


def _sprite() -> np.ndarray:
    """Opaque red disc on a fully transparent background whose hidden colour is bright green."""
    yy, xx = np.mgrid[:32, :32]
    r = np.hypot(yy - 15.5, xx - 15.5)
    a = np.clip((10.5 - r) * 255, 0, 255).astype(np.uint8)  # anti-aliased edge
    img = np.zeros((32, 32, 4), np.uint8)
    img[..., 1] = 255
    img[a > 0, :3] = (230, 20, 20)
    img[..., 3] = a
    return img


@pytest.fixture(scope="module")
def kinds(tmp_path_factory):
    """One CLI batch over a folder holding every image kind (one model load for all of them)."""
    src = tmp_path_factory.mktemp("kinds")
    write_image(src / "rgb8.png", _photo())
    write_image(src / "dark16.png", _photo().astype(np.uint16))  # max < 256: a value heuristic calls it 8-bit
    write_image(src / "gray.png", _photo()[..., 1])
    write_image(src / "sprite.png", _sprite())
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways; viewers rotate 90 degrees clockwise
    Image.fromarray(_photo(20, 36)).save(src / "rotated.jpg", exif=exif.tobytes(), quality=95)
    out = src / "out"
    result = run_cli("upscale", str(src), "-o", str(out), "--ext", "png")
    return src, out, result


def test_batch_of_every_kind_succeeds(kinds):
    _, out, (code, stdout, err) = kinds
    assert code == 0, err
    assert "upscaled 5 images" in stdout and "MP/s" in stdout
    assert sorted(p.name for p in out.iterdir()) == [f"{n}_x4.png" for n in ("dark16", "gray", "rgb8", "rotated", "sprite")]


def test_rgb8_round_trip(kinds, upscaler):
    res = read_image(kinds[1] / "rgb8_x4.png")
    assert res.shape == (96, 128, 3) and res.dtype == np.uint8
    assert np.array_equal(res, upscale_array(_photo(), upscaler))  # the library's pixels, unchanged


def test_rgb16_round_trip_keeps_16_bits_even_when_dark(kinds):
    dark = _photo().astype(np.uint16)
    assert dark.max() < 256
    res = read_image(kinds[1] / "dark16_x4.png")
    assert res.dtype == np.uint16 and res.shape == (96, 128, 3)
    # Still about as dark on the 16-bit scale; read as 8-bit it would come out 257x brighter.
    # (Near-black input is far outside the training data: the model darkens it by ~15-30 %.)
    assert 0.5 < float(res.mean()) / float(dark.mean()) < 1.5


def test_grayscale_in_grayscale_out(kinds, upscaler):
    res = read_image(kinds[1] / "gray_x4.png")
    assert res.ndim == 2 and res.shape == (96, 128) and res.dtype == np.uint8
    gray = _photo()[..., 1]
    rgb = upscale_array(np.repeat(gray[..., None], 3, axis=2), upscaler).astype(np.float64)
    assert np.abs(res - rgb @ [0.299, 0.587, 0.114]).max() <= 1.0


def _check_sprite(res: np.ndarray) -> None:
    assert res.shape == (128, 128, 4) and res.dtype == np.uint8
    a = res[..., 3]
    assert a[:8, :8].max() == 0 and a[60:68, 60:68].min() == 255  # background clear, centre solid
    assert 0.9 < (a > 127).mean() / (_sprite()[..., 3] > 127).mean() < 1.1
    visible = res[a > 0].astype(int)
    # The hidden green never leaks into visible pixels, and edges are not darkened.
    assert visible[:, 1].max() <= 40, visible[:, 1].max()
    assert visible[:, 0].min() >= 190, visible[:, 0].min()


def test_rgba_alpha_preserved_without_bleeding_or_fringes(kinds, upscaler):
    _check_sprite(read_image(kinds[1] / "sprite_x4.png"))  # --alpha model (default)
    _check_sprite(upscale_array(_sprite(), upscaler, alpha="resize"))


def test_without_fill_the_hidden_colour_would_bleed(upscaler):
    """Guard for the test above: the raw colour plane really does carry green into the disc."""
    sprite = _sprite()
    raw = upscale_array(np.ascontiguousarray(sprite[..., :3]), upscaler)
    visible = raw[np.kron(sprite[..., 3] > 0, np.ones((4, 4), bool))]
    assert visible[:, 1].max() > 60


def test_exif_rotated_jpeg(kinds):
    res = read_image(kinds[1] / "rotated_x4.png")
    assert res.shape == (36 * 4, 20 * 4, 3)  # upright: the rotation was applied before SR


def test_single_file_output_and_summary(tmp_path):
    write_image(tmp_path / "photo.png", _photo(12, 16))
    code, out, err = run_cli("upscale", str(tmp_path / "photo.png"), "-o", str(tmp_path / "big.webp"), "--quality", "100")
    assert code == 0, err
    assert read_image(tmp_path / "big.webp").shape == (48, 64, 3)
    assert "upscaled 1 image" in out and "MP/s" in out and "big.webp" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.webp", "photo.png"]  # no temp files left


def test_outscale_and_gray_alpha(upscaler):
    la = np.stack([_photo()[..., 0], np.full((24, 32), 200, np.uint8)], axis=2)
    res = upscale_array(la, upscaler, outscale=2.5)
    assert res.shape == (60, 80, 2) and res.dtype == np.uint8
    assert np.abs(res[..., 1].astype(int) - 200).max() <= 1


# ------------------------------------------------------------------------------- batches


def test_folder_glob_suffix_ext_and_corrupt_file(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    write_image(src / "a.png", _photo())
    write_image(src / "b.jpg", _photo(16, 16))
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    (src / "notes.txt").write_text("ignored: not an image")
    out = tmp_path / "out"
    code, stdout, err = run_cli("upscale", str(src), "-o", str(out), "--ext", "png")
    assert code == 1  # one input failed, the others were written
    assert "broken.png" in err and "cannot read image" in err and "Traceback" not in err
    assert sorted(p.name for p in out.iterdir()) == ["a_x4.png", "b_x4.png"]
    assert "2 images" in stdout and "1 failed" in stdout

    code, _, err = _cli(str(src / "*.png"), "-o", out, "--suffix", "", "--outscale", "2", "--overwrite")
    assert code == 1 and "broken.png" in err
    assert read_image(out / "a.png").shape == (48, 64, 3)
    # Default output: next to the input, with the scale suffix.
    code, _, err = _cli(src / "a.png")
    assert code == 0, err
    assert (src / "a_x4.png").is_file()


def test_plan_jobs_rules(tmp_path):
    for name in ("a.png", "a.jpg", "c.bmp"):
        write_image(tmp_path / name, _photo(8, 8))
    jobs = plan_jobs([tmp_path / "a.png", tmp_path / "a.jpg"], tmp_path / "o", factor=4, ext="png")
    assert jobs[0].dst == tmp_path / "o" / "a_x4.png" and jobs[0].error is None
    assert "both be written" in jobs[1].error
    jobs = plan_jobs([tmp_path / "c.bmp"], None, factor=2.5, suffix="")
    assert "would replace the input" in jobs[0].error
    jobs = plan_jobs([tmp_path / "c.bmp"], None, factor=2.5)
    assert jobs[0].dst == tmp_path / "c_x2.5.bmp"
    with pytest.raises(SrkdError, match="names one file"):
        plan_jobs([tmp_path / "a.png", tmp_path / "c.bmp"], tmp_path / "x.png", factor=4)
    with pytest.raises(SrkdError, match="--ext"):
        plan_jobs([tmp_path / "a.png"], None, factor=4, ext="gif")


# ----------------------------------------------------------------------------------- errors


def test_unknown_output_extension_is_an_error_not_a_folder(tmp_path):
    src = tmp_path / "ok.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(src)
    for typo in ("out.xyz", "out.pgn"):
        code, _, err = run_cli("upscale", str(src), "-o", str(tmp_path / typo))
        assert code == 2 and "is not an image format srkd writes" in err and ".png" in err and ".webp" in err
        assert len(err.strip().splitlines()) == 1 and not (tmp_path / typo).exists()
    # a folder: it exists, it ends with a separator, it has no extension, or several inputs go to it
    assert plan_jobs([src], str(tmp_path / "out.xyz") + "/", factor=4)[0].dst == tmp_path / "out.xyz" / "ok_x4.png"
    (tmp_path / "made.d").mkdir()
    assert plan_jobs([src], tmp_path / "made.d", factor=4)[0].dst == tmp_path / "made.d" / "ok_x4.png"
    assert plan_jobs([src], tmp_path / "results", factor=4)[0].dst == tmp_path / "results" / "ok_x4.png"
    other = tmp_path / "b.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(other)
    assert plan_jobs([src, other], tmp_path / "set.v2", factor=4)[1].dst == tmp_path / "set.v2" / "b_x4.png"


def test_output_exists_without_overwrite(tmp_path):
    write_image(tmp_path / "p.png", _photo())
    target = tmp_path / "p4.png"
    target.write_bytes(b"keep me")
    code, _, err = _cli(tmp_path / "p.png", "-o", target)
    assert code == 1 and "already exists" in err and "--overwrite" in err
    assert target.read_bytes() == b"keep me"
    code, _, err = _cli(tmp_path / "p.png", "-o", target, "--overwrite")
    assert code == 0, err
    assert read_image(target).shape == (96, 128, 3)


@pytest.mark.parametrize(
    "args,message",
    [
        (["{tmp}/missing.png"], "input not found"),
        (["{tmp}/*.webp"], "no image matches"),
        (["{tmp}/p.png", "--model", "no-such-model"], "unknown model"),
        (["{tmp}/p.png", "--device", "tpu"], "unknown device"),
        (["{tmp}/p.png", "--tile", "huge"], "--tile"),
        (["{tmp}/p.png", "--precision", "fp16", "--device", "cpu"], "fp16 is not supported on CPU"),
        (["{tmp}/p.png", "--alpha", "keep"], "--alpha"),
    ],
)
def test_errors_are_one_line_and_write_nothing(tmp_path, args, message):
    write_image(tmp_path / "p.png", _photo(8, 8))
    before = set(tmp_path.iterdir())
    code, _, err = _cli(*[a.format(tmp=tmp_path) for a in args], "-o", tmp_path / "out.png")
    assert code == 2, err
    assert message in err and err.count("\n") == 1 and err.startswith("srkd: error:")
    assert set(tmp_path.iterdir()) == before


def test_unavailable_cuda_is_a_clear_error(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    write_image(tmp_path / "p.png", _photo(8, 8))
    code, _, err = _cli(tmp_path / "p.png", "--device", "cuda")
    assert code == 2 and "CUDA is not available" in err


def test_subprocess_error_has_no_traceback(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "srkd", "upscale", str(tmp_path / "nope.png")],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "input not found" in proc.stderr


# ------------------------------------------------------------------------------ Python API


def test_python_api_numpy_and_pil(upscaler):
    img = _photo(12, 10)
    out = srkd.upscale(img, model=upscaler)
    assert out.shape == (48, 40, 3) and out.dtype == np.uint8
    out16 = srkd.upscale(img.astype(np.uint16) * 257, model=upscaler)
    assert out16.dtype == np.uint16 and np.abs(out16 / 257.0 - out).max() <= 1.01
    outf = srkd.upscale(img.astype(np.float32) / 255, model=upscaler, outscale=2)
    assert outf.shape == (24, 20, 3) and outf.dtype == np.float32 and 0 <= outf.min() and outf.max() <= 1
    gray = srkd.upscale(img[..., 0], model=upscaler)
    assert gray.shape == (48, 40) and gray.dtype == np.uint8

    pil = srkd.upscale(Image.fromarray(img), model=upscaler)
    assert isinstance(pil, Image.Image) and pil.mode == "RGB" and pil.size == (40, 48)
    assert np.array_equal(np.asarray(pil), out)
    assert srkd.upscale(Image.fromarray(_sprite()), model=upscaler).mode == "RGBA"
    assert srkd.upscale(Image.fromarray(img).convert("L"), model=upscaler).mode == "L"
    # A reference string or an nn.Module works too (the module at another head of the bundled model).
    from srkd.io.hub import load_model

    assert srkd.upscale(img, model=load_model(None).model, scale=2).shape == (24, 20, 3)
    with pytest.raises(SrkdError, match="numpy array or a PIL image"):
        srkd.upscale([[1, 2]], model=upscaler)
    with pytest.raises(SrkdError, match="unsupported pixel type"):
        srkd.upscale(img.astype(np.int32), model=upscaler)


def test_fill_transparent_keeps_visible_and_fills_smoothly():
    rgb = np.zeros((20, 20, 3), np.float32)
    rgb[:, :10] = (1.0, 0.0, 0.0)
    rgb[:, 10:] = (0.0, 1.0, 0.0)
    visible = np.zeros((20, 20), bool)
    visible[:, :10] = True
    filled = fill_transparent(rgb, visible)
    assert np.array_equal(filled[:, :10], rgb[:, :10])
    assert np.allclose(filled[:, 10:], (1.0, 0.0, 0.0), atol=1e-5)  # only red is visible nearby


def test_real_image_tiled_cli_matches_untiled(tmp_path, upscaler):
    """The CLI's tiling on a real Urban100 crop: tile size not dividing the image, one level at most."""
    hr = read_image(data_path("benchmarks", "Urban100", "HR", "img_012.png"))
    crop = np.ascontiguousarray(hr[:90, :110])
    write_image(tmp_path / "u.png", crop)
    code, _, err = _cli(tmp_path / "u.png", "-o", tmp_path / "tiled.png", "--tile", "37")
    assert code == 0, err
    whole = upscale_array(crop, upscaler)  # tile auto: a 90x110 image is one tile
    assert upscaler.tile is None
    diff = np.abs(read_image(tmp_path / "tiled.png").astype(int) - whole.astype(int))
    assert diff.max() <= 1


def test_upscaler_cache_is_the_callers_and_bounded():
    from srkd.upscale import UpscalerCache

    made = []
    cache = UpscalerCache(2)
    assert len(cache) == 0
    for key in ("a", "b", "a", "c"):
        cache.get(key, lambda key=key: made.append(key) or key.upper())
    assert made == ["a", "b", "c"] and len(cache) == 2  # "a" was reused; "b" made room for "c"
    seen = []
    one = UpscalerCache(1)
    one.get("x", lambda: "X")
    one.get("y", lambda: seen.append(len(one)) or "Y")
    assert seen == [0]  # the old entry is gone before the new one is built


def test_upscale_fills_the_cache_it_is_given(tmp_path):
    from srkd.io.checkpoint import save_model
    from srkd.models import build_from_spec
    from srkd.upscale import DEFAULT_CACHE, UpscalerCache

    path = save_model(build_from_spec("edsr:n_resblocks=1,n_feats=8,scale=2"), tmp_path / "m.safetensors")
    mine = UpscalerCache(3)
    before = len(DEFAULT_CACHE)
    out = srkd.upscale(_photo(8, 8), str(path), cache=mine, precision="fp32")
    assert out.shape == (16, 16, 3) and len(mine) == 1 and len(DEFAULT_CACHE) == before
