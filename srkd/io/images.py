"""Image reading and writing that keeps what the file holds.

``read_image`` returns a numpy array: HxW (grayscale), HxWx3 (RGB) or HxWx4 (RGBA), with the
file's bit depth as dtype (uint8, or uint16 for 16-bit PNG/TIFF), EXIF orientation applied.
Mode rules: palette images become RGB, or RGBA when they carry transparency; gray+alpha (LA)
becomes RGBA with the gray replicated; CMYK/YCbCr/1-bit become RGB/gray 8-bit.
``write_image`` picks the format from the extension and writes atomically. JPEG cannot hold alpha
or 16 bits, WebP and BMP cannot hold 16 bits: asking for that is an error, not a silent loss.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import SrkdError
from .files import atomic_path

READ_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
WRITE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF"}
_EXIF_ORIENTATION = 0x0112


def is_image_path(path: Path) -> bool:
    return path.suffix.lower() in READ_EXTS


def _orient(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1..8) to an array, as ImageOps.exif_transpose does for PIL."""
    ops = {2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
           5: lambda a: np.swapaxes(a, 0, 1), 6: lambda a: np.swapaxes(a, 0, 1)[:, ::-1],
           7: lambda a: np.swapaxes(a, 0, 1)[::-1, ::-1], 8: lambda a: np.swapaxes(a, 0, 1)[::-1]}
    return np.ascontiguousarray(ops[orientation](arr)) if orientation in ops else arr


def _read_16bit(path: Path, orientation: int) -> np.ndarray | None:
    """cv2 keeps 16-bit colour (PIL reduces 48-bit RGB to 8 bits); None if the file is 8-bit."""
    arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if arr is None or arr.dtype != np.uint16:
        return None
    if arr.ndim == 3:
        code = cv2.COLOR_BGRA2RGBA if arr.shape[2] == 4 else cv2.COLOR_BGR2RGB
        arr = cv2.cvtColor(arr, code)
    return _orient(arr, orientation)


def read_image(path) -> np.ndarray:
    """Read an image file; raises SrkdError naming the file when it cannot be decoded."""
    path = Path(path)
    if not path.is_file():
        raise SrkdError(f"image not found: {path}")
    try:
        with Image.open(path) as img:
            orientation = img.getexif().get(_EXIF_ORIENTATION, 1)
            if _is_16bit(img, path):
                arr = _read_16bit(path, orientation)
                if arr is not None:
                    return arr
            img.load()
            img = ImageOps.exif_transpose(img)
            return _pil_to_array(img)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise SrkdError(f"cannot read image {path}: {exc}") from None


def _is_16bit(img: Image.Image, path: Path) -> bool:
    """PIL reports 16-bit colour PNG/TIFF as 8-bit modes; read the depth from the file itself."""
    if img.mode.startswith("I;16"):
        return True
    if img.format == "PNG":
        with open(path, "rb") as f:
            head = f.read(25)
        return len(head) == 25 and head[24] == 16  # IHDR bit depth
    if img.format == "TIFF":
        bits = img.tag_v2.get(258, 8)
        return (bits[0] if isinstance(bits, tuple) else bits) == 16
    return False


def _pil_to_array(img: Image.Image) -> np.ndarray:
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return np.array(img, dtype=np.uint16)
    if mode == "I":
        arr = np.array(img)
        if arr.min() < 0 or arr.max() > 65535:
            raise ValueError("32-bit integer images are not supported")
        return arr.astype(np.uint16)
    if mode == "F":
        raise ValueError("floating-point images are not supported")
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif mode == "LA":
        img = img.convert("RGBA")
    elif mode == "1":
        img = img.convert("L")
    elif mode not in ("L", "RGB", "RGBA"):
        img = img.convert("RGB")
    return np.array(img)


def read_rgb_uint8(path) -> np.ndarray:
    """HxWx3 uint8 for benchmarks: gray replicated, alpha dropped, 16 bits rounded to 8."""
    arr = read_image(path)
    if arr.dtype == np.uint16:
        arr = np.round(arr.astype(np.float64) / 257.0).astype(np.uint8)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    return np.ascontiguousarray(arr[..., :3])


def write_image(path, array: np.ndarray, overwrite: bool = False, quality: int = 95) -> Path:
    """Write HxW, HxWx3 or HxWx4 uint8/uint16 ``array``; format from the extension; atomic."""
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in WRITE_FORMATS:
        raise SrkdError(f"cannot write {path.name}: unsupported extension (use {', '.join(sorted(WRITE_FORMATS))})")
    if array.dtype not in (np.uint8, np.uint16):
        raise SrkdError(f"cannot write {array.dtype} images; expected uint8 or uint16")
    channels = 1 if array.ndim == 2 else array.shape[2]
    fmt = WRITE_FORMATS[ext]
    if array.dtype == np.uint16 and fmt not in ("PNG", "TIFF"):
        raise SrkdError(f"{fmt} cannot hold 16-bit images; write {path.stem}.png or .tiff instead")
    if channels == 4 and fmt in ("JPEG", "BMP"):
        raise SrkdError(f"{fmt} cannot hold transparency; write {path.stem}.png, .webp or .tiff instead")
    with atomic_path(path, overwrite=overwrite) as tmp:
        if array.dtype == np.uint16:
            out = array
            if channels == 3:
                out = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
            elif channels == 4:
                out = cv2.cvtColor(array, cv2.COLOR_RGBA2BGRA)
            if not cv2.imwrite(str(tmp), out):
                raise SrkdError(f"cannot write {path}")
        else:
            img = Image.fromarray(array[..., 0] if channels == 1 and array.ndim == 3 else array)
            kwargs = {"quality": quality} if fmt in ("JPEG", "WEBP") else {}
            if fmt == "WEBP" and quality >= 100:
                kwargs = {"lossless": True}
            img.save(tmp, format=fmt, **kwargs)
    return path
