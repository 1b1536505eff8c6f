"""One image through an Upscaler: numpy arrays and PIL images of every kind (``upscale_array``).

Image kinds:

* **8- and 16-bit** are told apart by dtype (``uint8``/``uint16``), never by pixel values, so a
  dark 16-bit image stays 16-bit. Float arrays are taken as [0, 1]. The network runs in float
  and the output is rounded back to the input's dtype.
* **Grayscale** runs through the network as replicated RGB; the output's luma
  (0.299 R + 0.587 G + 0.114 B, Rec. 601) is returned as a single channel.
* **Alpha** is upscaled separately: by the network (alpha replicated to RGB, channel mean taken;
  ``alpha="model"``, sharp edges) or by Lanczos resampling (``alpha="resize"``). Before the colour
  goes through the network, the colour of fully transparent pixels, which is invisible and often
  garbage (black, or a keying colour), is replaced by a smooth fill from the visible pixels
  around it (pull-push). No invisible colour can then bleed into visible pixels, and edges get no
  dark fringe, which is what premultiplying achieves, without dividing by a tiny upscaled alpha.
* ``outscale`` resizes the network's output to any final factor (area averaging when shrinking,
  Lanczos when enlarging).

This module imports torch lazily so that ``import srkd`` stays fast.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from .errors import SrkdError

ALPHA_MODES = ("model", "resize")
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _peak(dtype: np.dtype) -> float:
    if dtype == np.uint8:
        return 255.0
    if dtype == np.uint16:
        return 65535.0
    if np.issubdtype(dtype, np.floating):
        return 1.0
    raise SrkdError(f"unsupported pixel type {dtype}: use uint8, uint16 or float in [0, 1]")


def _from_float(x: np.ndarray, dtype: np.dtype) -> np.ndarray:
    peak = _peak(dtype)
    x = np.clip(x, 0.0, 1.0)
    if peak == 1.0:
        return x.astype(dtype, copy=False)
    return np.rint(x * peak).astype(dtype)


def fill_transparent(rgb: np.ndarray, visible: np.ndarray) -> np.ndarray:
    """Replace the colour of pixels where ``visible`` is False by a smooth fill from visible ones.

    Pull-push: coverage-weighted averages over an image pyramid, then each level fills its gaps
    from the coarser one. Visible pixels are returned unchanged.
    """
    import cv2

    if visible.all() or not visible.any():
        return rgb
    w = visible.astype(np.float32)
    c = rgb.astype(np.float32) * w[..., None]
    levels = [(c, w)]
    while max(c.shape[:2]) > 1:
        size = (max(1, (c.shape[1] + 1) // 2), max(1, (c.shape[0] + 1) // 2))
        c = cv2.resize(c, size, interpolation=cv2.INTER_AREA).reshape(size[1], size[0], 3)
        w = cv2.resize(w, size, interpolation=cv2.INTER_AREA).reshape(size[1], size[0])
        levels.append((c, w))
    c, w = levels[-1]
    fill = c / np.maximum(w, 1e-12)[..., None]
    for c, w in reversed(levels[:-1]):
        up = cv2.resize(fill, (c.shape[1], c.shape[0]), interpolation=cv2.INTER_LINEAR).reshape(c.shape)
        fill = c + (1.0 - w)[..., None] * up  # c is colour x coverage: exact where coverage is 1
    out = rgb.astype(np.float32, copy=True)
    out[~visible] = fill[~visible]
    return out


def _snap_flat_alpha(alpha_sr: np.ndarray, alpha_lr: np.ndarray, s: int, radius: int = 2) -> np.ndarray:
    """Keep fully transparent and fully opaque areas exactly so after upscaling.

    Networks and Lanczos both leave a level or so of noise in flat areas (bias, ringing); an
    output pixel whose LR neighbourhood is entirely 0 (or 1) gets exactly 0 (or 1).
    """
    import cv2

    kernel = np.ones((2 * radius + 1, 2 * radius + 1), np.uint8)
    hi = cv2.dilate(alpha_lr, kernel, borderType=cv2.BORDER_REPLICATE)
    lo = cv2.erode(alpha_lr, kernel, borderType=cv2.BORDER_REPLICATE)
    clear = np.repeat(np.repeat(hi <= 0.0, s, axis=0), s, axis=1)
    solid = np.repeat(np.repeat(lo >= 1.0, s, axis=0), s, axis=1)
    out = alpha_sr.copy()
    out[clear] = 0.0
    out[solid] = 1.0
    return out


def _resize(x: np.ndarray, h: int, w: int) -> np.ndarray:
    import cv2

    if x.shape[0] == h and x.shape[1] == w:
        return x
    shrink = h < x.shape[0] or w < x.shape[1]
    out = cv2.resize(x, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LANCZOS4)
    return np.clip(out, 0.0, 1.0).reshape((h, w) + x.shape[2:])


def _run(upscaler, rgb: np.ndarray, self_ensemble: bool, progress, out_dtype=None) -> np.ndarray:
    """HxWx3 float32 [0, 1] (or uint8 with out_dtype) through the network -> HsxWsx3."""
    import torch

    from .infer import to_tensor

    y = upscaler.process(to_tensor(rgb), self_ensemble=self_ensemble, progress=progress,
                         out_dtype=out_dtype or torch.float32)
    return y[0].permute(1, 2, 0).contiguous().numpy()


def upscale_array(
    img: np.ndarray,
    upscaler,
    *,
    outscale: float | None = None,
    alpha: str = "model",
    self_ensemble: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Upscale an HxW, HxWx1, HxWx2 (gray+alpha), HxWx3 or HxWx4 array; same dtype and layout out."""
    if alpha not in ALPHA_MODES:
        raise SrkdError(f"--alpha must be one of {', '.join(ALPHA_MODES)}, got '{alpha}'")
    if not isinstance(img, np.ndarray):
        raise SrkdError(f"expected a numpy array, got {type(img).__name__}")
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] not in (1, 2, 3, 4)) or min(img.shape[:2]) < 1:
        raise SrkdError(f"unsupported image shape {img.shape}: expected HxW, HxWx1, HxWx2, HxWx3 or HxWx4")
    dtype = img.dtype
    peak = _peak(dtype)
    channels = 1 if img.ndim == 2 else img.shape[2]
    gray = channels in (1, 2)
    h, w = img.shape[:2]
    s = upscaler.scale
    if outscale is not None and outscale <= 0:
        raise SrkdError(f"--outscale must be positive, got {outscale}")
    out_h, out_w = (h * s, w * s) if outscale is None else (max(1, round(h * outscale)), max(1, round(w * outscale)))

    planes = img.reshape(h, w, channels)
    colour = planes[..., :1] if gray else planes[..., :3]
    a = planes[..., -1] if channels in (2, 4) else None

    # Fast path: plain 8-bit RGB at the network's scale is rounded on the device.
    if not gray and a is None and dtype == np.uint8 and (out_h, out_w) == (h * s, w * s):
        import torch

        return _run(upscaler, colour, self_ensemble, progress, out_dtype=torch.uint8)

    rgb = colour.astype(np.float32) / np.float32(peak) if peak != 1.0 else np.clip(colour.astype(np.float32), 0, 1)
    if gray:
        rgb = np.repeat(rgb, 3, axis=2)
    alpha_out = None
    if a is not None:
        af = a.astype(np.float32) / np.float32(peak) if peak != 1.0 else np.clip(a.astype(np.float32), 0, 1)
        if af.min() >= 1.0:
            alpha_out = np.ones((out_h, out_w), np.float32)  # opaque: nothing to upscale
        else:
            rgb = fill_transparent(rgb, af > 0)
            if alpha == "model":
                alpha_out = _run(upscaler, np.repeat(af[..., None], 3, axis=2), self_ensemble, progress).mean(axis=2)
            else:
                alpha_out = _resize(af, h * s, w * s)
            alpha_out = _snap_flat_alpha(alpha_out, af, s)
            alpha_out = _resize(np.clip(alpha_out, 0.0, 1.0), out_h, out_w)
    sr = _resize(_run(upscaler, rgb, self_ensemble, progress), out_h, out_w)
    if gray:
        sr = sr @ _LUMA
        sr = sr[..., None]
    parts = [sr] if alpha_out is None else [sr, alpha_out[..., None]]
    out = _from_float(np.concatenate(parts, axis=2) if len(parts) > 1 else sr, dtype)
    if img.ndim == 2:
        return out[..., 0]
    return out


# ------------------------------------------------------------------------------- PIL / API


def _pil_to_array(image) -> tuple[np.ndarray, str]:
    mode = image.mode
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif mode == "PA":
        image = image.convert("RGBA")
    elif mode == "1":
        image = image.convert("L")
    elif mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
        arr = np.asarray(image)
        if arr.dtype != np.uint16:
            if arr.min() < 0 or arr.max() > 65535:
                raise SrkdError(f"PIL mode {mode} with values outside 0..65535 is not supported")
            arr = arr.astype(np.uint16)
        return arr, mode
    elif mode == "F":
        return np.asarray(image, dtype=np.float32), mode
    elif mode not in ("L", "LA", "RGB", "RGBA"):
        image = image.convert("RGB")
    return np.asarray(image), mode


def _array_to_pil(arr: np.ndarray, mode: str):
    from PIL import Image

    if arr.dtype == np.uint16:
        if arr.ndim == 2:
            return Image.fromarray(arr)  # PIL picks I;16
        raise SrkdError("PIL cannot hold 16-bit colour images; pass a numpy array instead")
    if mode == "F":
        return Image.fromarray(arr.astype(np.float32), mode="F")
    return Image.fromarray(arr)
