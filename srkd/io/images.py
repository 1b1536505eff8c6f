"""Reading and writing images as numpy arrays, keeping what the file holds.

``read_image`` returns

* ``HxW`` for grayscale, ``HxWx2`` for grayscale + alpha, ``HxWx3`` for RGB, ``HxWx4`` for RGBA;
* ``uint8``, or ``uint16`` when the file stores 16 bits per sample (PNG, TIFF);
* with the EXIF orientation applied, so the array is upright as viewers show it.

Other modes are normalised: bilevel -> gray; palette -> RGB, or RGBA when the palette has
transparency; a grayscale/RGB file with a transparent colour key (PNG ``tRNS``) -> gray+alpha/RGBA;
CMYK, YCbCr and the like -> RGB. 32-bit integer and float images are refused (no SR model is
meant for them).

PIL decodes 8-bit files, but it silently truncates 16-bit colour PNG/TIFF to 8 bits, so those
are decoded with OpenCV (``IMREAD_UNCHANGED``, then BGR(A) -> RGB(A)).

``write_image`` picks the format from the extension and refuses what the format cannot store:
alpha in JPEG or BMP, and 16 bits in JPEG, WebP or BMP. Convert first (drop alpha, or
``(x + 128) // 257`` for 16 -> 8 bits, which is what ``to_rgb_uint8`` does) rather than have
data lost silently.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from ..errors import SrkdError
from .files import atomic_path

READ_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
WRITE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".tif": "TIFF", ".tiff": "TIFF", ".bmp": "BMP"}
_EXIF_ORIENTATION = 0x0112


def is_image_path(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in READ_EXTS


# ------------------------------------------------------------------------------------- reading


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file (PNG, JPEG, BMP, WebP, TIFF) into a numpy array; see the module doc."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SrkdError(f"cannot read image {path}: {exc.strerror or exc}") from None
    return decode_image(data, path)


def decode_image(data: bytes, name: str | os.PathLike = "<bytes>") -> np.ndarray:
    """:func:`read_image` on the bytes of a file; ``name`` is used in error messages."""
    from PIL import Image, UnidentifiedImageError

    try:
        im = Image.open(io.BytesIO(data))
        im.load()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        # libtiff in OpenCV reads some TIFF variants (e.g. 16-bit colour with odd compressions)
        # that PIL does not.
        arr = _cv2_decode(data) if data[:4] in (b"II*\x00", b"MM\x00*") else None
        if arr is None:
            raise SrkdError(f"cannot read image {name}: {_reason(exc)}") from None
        return arr
    if _is_16bit_colour(im, data):
        arr = _cv2_decode(data)
        if arr is None:
            raise SrkdError(f"cannot read image {name}: OpenCV could not decode this 16-bit file")
        return _orient(arr, _orientation(im))
    try:
        return _pil_to_array(im, name)
    except (OSError, ValueError, SyntaxError) as exc:
        raise SrkdError(f"cannot read image {name}: {_reason(exc)}") from None


def _reason(exc: Exception) -> str:
    text = str(exc).split("\n")[0]
    return text if text else type(exc).__name__


def _is_16bit_colour(im, data: bytes) -> bool:
    """True for 16-bit images PIL would truncate (its I;16 modes hold only one channel)."""
    if im.mode.startswith("I;16"):
        return False
    if im.format == "PNG":
        return len(data) > 24 and data[24] == 16  # IHDR bit depth
    if im.format == "TIFF":
        bits = im.tag_v2.get(258, (8,))
        bits = bits if isinstance(bits, tuple) else (bits,)
        return any(b > 8 for b in bits)
    return False


def _cv2_decode(data: bytes) -> np.ndarray | None:
    import cv2

    try:
        arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error:
        return None
    if arr is None or arr.dtype not in (np.uint8, np.uint16) or arr.ndim not in (2, 3):
        return None
    if arr.ndim == 3:
        if arr.shape[2] == 1:
            arr = arr[..., 0]
        elif arr.shape[2] == 3:
            arr = cv2.cvtColor(arr, cv2.COLOR_BGR2RGB)
        elif arr.shape[2] == 4:
            arr = cv2.cvtColor(arr, cv2.COLOR_BGRA2RGBA)
        else:
            return None
    return np.ascontiguousarray(arr)


def _orientation(im) -> int:
    try:
        return int(im.getexif().get(_EXIF_ORIENTATION, 1))
    except Exception:  # noqa: BLE001 (a broken EXIF block must not make the pixels unreadable)
        return 1


def _orient(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1-8) to an HxW[xC] array, as PIL's ``exif_transpose`` does."""
    ops = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.swapaxes(0, 1),
        6: lambda a: np.rot90(a, -1),
        7: lambda a: a[::-1, ::-1].swapaxes(0, 1),
        8: lambda a: np.rot90(a, 1),
    }
    op = ops.get(orientation)
    return arr if op is None else np.ascontiguousarray(op(arr))


def _pil_to_array(im, name) -> np.ndarray:
    from PIL import ImageOps

    try:
        im = ImageOps.exif_transpose(im)
    except Exception:  # noqa: BLE001 (broken EXIF: keep the stored orientation)
        pass
    mode = im.mode
    if mode.startswith("I;16"):
        return np.asarray(im).astype(np.uint16)
    if mode == "I":
        arr = np.asarray(im)
        if arr.min() < 0 or arr.max() > 65535:
            raise SrkdError(f"cannot read image {name}: 32-bit integer pixels are not supported; save it as 8- or 16-bit")
        return arr.astype(np.uint16)
    if mode == "F":
        raise SrkdError(f"cannot read image {name}: floating-point pixels are not supported; save it as 8- or 16-bit")
    keyed = "transparency" in im.info
    if mode == "1":
        im = im.convert("L")
    elif mode in ("P", "PA"):
        im = im.convert("RGBA" if keyed or mode == "PA" else "RGB")
    elif mode in ("L", "RGB") and keyed:
        im = im.convert("LA" if mode == "L" else "RGBA")
    elif mode == "La":
        im = im.convert("LA")
    elif mode == "RGBa":
        im = im.convert("RGBA")
    elif mode not in ("L", "LA", "RGB", "RGBA"):
        im = im.convert("RGB")
    return np.ascontiguousarray(np.asarray(im, dtype=np.uint8))


def to_rgb_uint8(img: np.ndarray) -> np.ndarray:
    """Any array from :func:`read_image` -> HxWx3 uint8: gray replicated, alpha dropped,
    16-bit scaled by 1/257 with rounding (65535 -> 255)."""
    if img.dtype == np.uint16:
        img = ((img.astype(np.uint32) + 128) // 257).astype(np.uint8)
    elif img.dtype != np.uint8:
        raise SrkdError(f"unsupported pixel type {img.dtype}: expected uint8 or uint16")
    if img.ndim == 2:
        img = img[..., None]
    channels = img.shape[2]
    if channels in (1, 2):
        img = np.repeat(img[..., :1], 3, axis=2)
    elif channels >= 3:
        img = img[..., :3]
    return np.ascontiguousarray(img)


def read_rgb_uint8(path: str | os.PathLike) -> np.ndarray:
    """Read an image as HxWx3 uint8, the benchmarks' convention (EDSR replicates gray to RGB)."""
    return to_rgb_uint8(read_image(path))


# ------------------------------------------------------------------------------------- writing


def png_params(level: int | None) -> list[int]:
    """OpenCV PNG parameters. None: zlib's RLE strategy, which measured within 2 % of level 6's size
    at a quarter of its time on upscaled images (benchmarks/png_encoders.py); 0-9: that zlib level."""
    import cv2

    if level is None:
        return [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE]
    return [cv2.IMWRITE_PNG_COMPRESSION, int(level)]


def write_image(path: str | os.PathLike, array: np.ndarray, overwrite: bool = False, quality: int = 95,
                png_compression: int | None = None) -> Path:
    """Write a uint8/uint16 HxW[x1|2|3|4] array; the format comes from the extension.

    PNG and TIFF store 8 or 16 bits with or without alpha (16-bit gray+alpha is written as RGBA);
    WebP 8 bits with or without alpha (gray+alpha as RGBA); JPEG and BMP 8-bit gray or RGB only
    (readers ignore BMP's alpha). ``quality`` applies to
    JPEG and WebP; WebP at quality 100 is written lossless. ``png_compression``: None (fast, see
    :func:`png_params`) or a zlib level 0-9. The file appears atomically.
    """
    path = Path(path)
    fmt = WRITE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise SrkdError(f"cannot write {path}: unknown image extension '{path.suffix}' (use {', '.join(WRITE_FORMATS)})")
    arr = np.asarray(array)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (2, 3, 4)) or 0 in arr.shape:
        raise SrkdError(f"cannot write {path}: expected an HxW, HxWx2, HxWx3 or HxWx4 image, got shape {arr.shape}")
    if arr.dtype not in (np.uint8, np.uint16):
        raise SrkdError(f"cannot write {path}: pixels must be uint8 or uint16, got {arr.dtype}")
    alpha = arr.ndim == 3 and arr.shape[2] in (2, 4)
    if fmt in ("JPEG", "BMP") and alpha:
        raise SrkdError(f"cannot write {path}: {fmt} cannot store transparency; use .png, .webp or .tiff, or drop the alpha channel")
    if arr.dtype == np.uint16 and fmt not in ("PNG", "TIFF"):
        raise SrkdError(f"cannot write {path}: the image is 16-bit, which {fmt} cannot store; use .png or .tiff")
    if not 1 <= quality <= 100:
        raise SrkdError(f"quality must be between 1 and 100, got {quality}")
    if png_compression is not None and not 0 <= int(png_compression) <= 9:
        raise SrkdError(f"PNG compression must be between 0 and 9, got {png_compression}")
    data = encode_image(arr, fmt, path, quality, png_compression)
    with atomic_path(path, overwrite) as tmp:
        try:
            tmp.write_bytes(data)
        except OSError as exc:
            raise SrkdError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path


def encode_image(arr: np.ndarray, fmt: str, path: Path, quality: int = 95, png_compression: int | None = None) -> bytes:
    """The encoded bytes of a checked array (see :func:`write_image`)."""
    if arr.dtype == np.uint16 or (fmt == "PNG" and not (arr.ndim == 3 and arr.shape[2] == 2)):
        return _encode_cv2(arr, path, png_compression)  # 16-bit, and 8-bit PNG: OpenCV's faster encoder
    return _encode_8bit(arr, fmt, quality, png_compression)


def _encode_8bit(arr: np.ndarray, fmt: str, quality: int, png_compression: int | None = None) -> bytes:
    from PIL import Image

    im = Image.fromarray(np.ascontiguousarray(arr))
    if im.mode == "LA" and fmt == "WEBP":
        im = im.convert("RGBA")
    options = {
        "JPEG": {"quality": quality},
        # exact: lossless WebP otherwise rewrites the colour under fully transparent pixels.
        "WEBP": {"quality": quality, "lossless": quality == 100, "exact": True},
        "TIFF": {"compression": "tiff_lzw"},
        "PNG": {"compress_level": 1 if png_compression is None else int(png_compression)},  # 8-bit gray+alpha only
    }.get(fmt, {})
    buf = io.BytesIO()
    im.save(buf, format=fmt, **options)
    return buf.getvalue()


def _encode_cv2(arr: np.ndarray, path: Path, png_compression: int | None = None) -> bytes:
    import cv2

    if arr.ndim == 3 and arr.shape[2] == 2:  # no 16-bit gray+alpha in OpenCV's encoders
        arr = np.concatenate([np.repeat(arr[..., :1], 3, axis=2), arr[..., 1:]], axis=2)
    if arr.ndim == 3:
        arr = cv2.cvtColor(arr, cv2.COLOR_RGB2BGR if arr.shape[2] == 3 else cv2.COLOR_RGBA2BGRA)
    png = path.suffix.lower() == ".png"
    ok, buf = cv2.imencode(".png" if png else ".tiff", np.ascontiguousarray(arr), png_params(png_compression) if png else [])
    if not ok:
        raise SrkdError(f"cannot write {path}: OpenCV failed to encode the image")
    return buf.tobytes()
