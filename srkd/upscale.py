"""Upscale images: numpy arrays, PIL images and files (the library behind ``srkd upscale``).

``srkd.upscale(image, model=None, ...)`` upscales one image and returns the same kind of object:
a numpy array with the input's dtype and channel layout, or a PIL image. ``upscale_files`` runs
a batch of files, folders and glob patterns; ``upscale_array`` is the shared core.

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

import glob
import os
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from .errors import SrkdError

ALPHA_MODES = ("model", "resize")
READ_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
WRITE_EXTS = {"png": ".png", "jpg": ".jpg", "jpeg": ".jpg", "webp": ".webp", "tiff": ".tiff", "tif": ".tif", "bmp": ".bmp"}
EXT_CHOICES = ("same", "png", "jpg", "webp", "tiff", "bmp")
_NO_ALPHA = (".jpg", ".jpeg", ".bmp")
_EIGHT_BIT_ONLY = (".jpg", ".jpeg", ".webp", ".bmp")
_FILE_SUFFIXES = frozenset(WRITE_EXTS.values()) | {".jpeg"}
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


# ---------------------------------------------------------------------------------- arrays


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


class UpscalerCache:
    """Upscalers built for model references, kept for repeated calls: bounded, least recently used
    out first. :func:`upscale` uses :data:`DEFAULT_CACHE` (one model) unless given its own."""

    def __init__(self, size: int = 1):
        if size < 1:
            raise SrkdError(f"an UpscalerCache holds at least one Upscaler, not {size}")
        self.size = int(size)
        self._items: OrderedDict = OrderedDict()

    def get(self, key, make: Callable[[], object]):
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        value = make()
        self._items[key] = value
        while len(self._items) > self.size:
            self._items.popitem(last=False)
        return value

    def clear(self) -> None:
        self._items.clear()

    def __len__(self) -> int:
        return len(self._items)


DEFAULT_CACHE = UpscalerCache(1)  # keep one model alive, not every model ever used


def _get_upscaler(model, scale, device, precision, tile, tile_pad, backend=None, cache: UpscalerCache | None = None):
    from torch import nn

    from .backends import default_backend
    from .infer import Upscaler

    backend = backend or default_backend()
    if isinstance(model, Upscaler):
        return model
    if model is None or isinstance(model, (str, os.PathLike)):
        key = (str(model) if model is not None else None, scale, str(device), precision, str(tile), tile_pad, backend)

        def make():
            from .io.hub import load_model

            net = load_model(None if model is None else str(model), scale=scale).model
            return Upscaler(net, device=device, precision=precision, tile=tile, tile_pad=tile_pad, backend=backend)

        return (cache or DEFAULT_CACHE).get(key, make)
    net = getattr(model, "model", model)  # a ModelFile
    if not isinstance(net, nn.Module):
        raise SrkdError(f"model must be a reference string, a ModelFile, an nn.Module or an Upscaler, not {type(model).__name__}")
    if scale is not None and scale != net.scale:
        if scale not in getattr(net, "scales", (net.scale,)):
            raise SrkdError(f"the model is x{net.scale}; it has no x{scale} head")
        import copy

        net = copy.deepcopy(net)
        net.set_scale(scale)
    return Upscaler(net, device=device, precision=precision, tile=tile, tile_pad=tile_pad, backend=backend)


def upscale(
    image,
    model=None,
    *,
    scale: int | None = None,
    outscale: float | None = None,
    device: str = "auto",
    precision: str = "auto",
    tile: int | str | None = "auto",
    tile_pad: int | None = None,
    alpha: str = "model",
    self_ensemble: bool = False,
    backend: str | None = None,
    cache: UpscalerCache | None = None,
):
    """Upscale one image (numpy array or PIL image); returns the same kind of object.

    ``model``: None (the bundled model), a reference string (path, preset, ``hf://...``), a
    ``ModelFile``, an ``nn.Module`` or an ``srkd.infer.Upscaler`` (reuse one for many images).
    Reference strings are loaded once and kept in ``cache`` (default :data:`DEFAULT_CACHE`, one
    model) for repeated calls with the same settings.
    ``backend`` None is ``$SRKD_BACKEND`` or ``auto`` (srkd.backends.default_backend).
    """
    upscaler = _get_upscaler(model, scale, device, precision, tile, tile_pad, backend, cache)
    if isinstance(image, np.ndarray):
        return upscale_array(image, upscaler, outscale=outscale, alpha=alpha, self_ensemble=self_ensemble)
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow is a dependency
        Image = None
    if Image is not None and isinstance(image, Image.Image):
        arr, mode = _pil_to_array(image)
        out = upscale_array(arr, upscaler, outscale=outscale, alpha=alpha, self_ensemble=self_ensemble)
        return _array_to_pil(out, mode)
    raise SrkdError(f"expected a numpy array or a PIL image, got {type(image).__name__}")


# ----------------------------------------------------------------------------------- files


@dataclass
class Job:
    src: Path
    dst: Path | None
    error: str | None = None


@dataclass
class BatchReport:
    done: list = field(default_factory=list)  # (src, dst, seconds, output pixels)
    info: list = field(default_factory=list)  # one-time facts from the Upscaler (backend auto's choice)
    failed: list = field(default_factory=list)  # (src, message)
    seconds: float = 0.0

    @property
    def megapixels(self) -> float:
        return sum(d[3] for d in self.done) / 1e6

    @property
    def mp_per_s(self) -> float:
        """Output megapixels per second of the whole batch (wall clock: reads, network and writes overlap)."""
        busy = self.seconds or sum(d[2] for d in self.done)
        return self.megapixels / busy if busy > 0 else 0.0


def expand_inputs(inputs: Iterable[str | os.PathLike]) -> list[Path]:
    """Files as given, folders' image files (sorted, not recursive), glob patterns' image matches."""
    found: list[Path] = []
    for item in inputs:
        text = str(item)
        path = Path(text).expanduser()
        if path.is_file():
            found.append(path)
        elif path.is_dir():
            files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in READ_EXTS)
            if not files:
                raise SrkdError(f"folder {path} has no images ({', '.join(READ_EXTS)})")
            found += files
        elif glob.has_magic(text):
            matches = sorted(Path(p) for p in glob.glob(os.path.expanduser(text), recursive=True))
            files = [p for p in matches if p.is_file() and p.suffix.lower() in READ_EXTS]
            if not files:
                raise SrkdError(f"no image matches '{text}'")
            found += files
        else:
            raise SrkdError(f"input not found: {text}")
    unique, seen = [], set()
    for p in found:
        key = os.path.realpath(p)
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


class _Expanded(list):
    """Inputs already expanded by :func:`expand_inputs`."""


def _expanded(inputs) -> bool:
    return isinstance(inputs, _Expanded)


def _canonical(suffix: str) -> str:
    suffix = suffix.lower()
    return ".jpg" if suffix == ".jpeg" else suffix


def _factor_text(factor: float) -> str:
    return f"{factor:g}"


def plan_jobs(
    inputs: Iterable[str | os.PathLike],
    output: str | os.PathLike | None,
    *,
    factor: float,
    suffix: str | None = None,
    ext: str = "same",
) -> list[Job]:
    """Map inputs to output paths. ``output``: None (next to each input), a file (one input) or a folder."""
    ext = ext.lower().lstrip(".")
    if ext != "same" and ext not in WRITE_EXTS:
        raise SrkdError(f"--ext must be one of {', '.join(EXT_CHOICES)}, got '{ext}'")
    sources = [Path(p) for p in inputs] if _expanded(inputs) else expand_inputs(inputs)
    if suffix is None:
        suffix = f"_x{_factor_text(factor)}"
    if any(sep in suffix for sep in ("/", "\\")):
        raise SrkdError(f"--suffix must not contain a path separator: '{suffix}'")
    out = Path(output).expanduser() if output is not None else None
    # -o is a folder when it exists as one, ends with a separator, has no extension, or several
    # inputs go to it; otherwise it names a file, and its extension must be one srkd writes (a typo
    # such as out.pgn must not silently become a folder).
    folder_form = out is not None and (out.is_dir() or str(output).endswith(("/", os.sep)) or not out.suffix)
    single_file = out is not None and not folder_form and out.suffix.lower() in _FILE_SUFFIXES
    if out is not None and not folder_form and not single_file and len(sources) <= 1:
        known = ", ".join(sorted(_FILE_SUFFIXES))
        raise SrkdError(f"-o {output}: '{out.suffix}' is not an image format srkd writes ({known}); "
                        f"end the path with / to write into a folder")
    if single_file and len(sources) > 1:
        raise SrkdError(f"-o {output} names one file but {len(sources)} inputs were given; pass a folder for -o")
    if single_file and ext != "same" and WRITE_EXTS[ext] != _canonical(out.suffix):
        raise SrkdError(f"-o {output} does not match --ext {ext}")

    jobs: list[Job] = []
    taken: dict[str, Path] = {}
    for src in sources:
        if single_file:
            dst = out
        else:
            if ext == "same":
                new_ext = src.suffix.lower() if src.suffix.lower() in _FILE_SUFFIXES else ".png"
            else:
                new_ext = WRITE_EXTS[ext]
            folder = out if out is not None else src.parent
            dst = folder / f"{src.stem}{suffix}{new_ext}"
        job = Job(src, dst)
        key = os.path.realpath(dst)
        if key == os.path.realpath(src):
            job.error = f"the output {dst} would replace the input; choose another -o, --suffix or --ext"
        elif key in taken:
            job.error = f"{taken[key]} and {src} would both be written to {dst}; use separate output folders or --ext same"
        else:
            taken[key] = src
        jobs.append(job)
    return jobs


def _check_format(img: np.ndarray, dst: Path) -> str | None:
    suffix = dst.suffix.lower()
    channels = 1 if img.ndim == 2 else img.shape[2]
    if channels in (2, 4) and suffix in _NO_ALPHA:
        return f"the image has transparency, which {suffix[1:].upper()} cannot store; use --ext png or webp"
    if img.dtype == np.uint16 and suffix in _EIGHT_BIT_ONLY:
        return f"the image is 16-bit, which {suffix[1:].upper()} cannot store; use --ext png or tiff"
    return None


def upscale_files(
    inputs: Iterable[str | os.PathLike],
    output: str | os.PathLike | None = None,
    *,
    model=None,
    scale: int | None = None,
    outscale: float | None = None,
    suffix: str | None = None,
    ext: str = "same",
    device: str = "auto",
    precision: str = "auto",
    tile: int | str | None = "auto",
    tile_pad: int | None = None,
    compile: bool = False,
    alpha: str = "model",
    self_ensemble: bool = False,
    overwrite: bool = False,
    quality: int = 95,
    png_compression: int | None = None,
    pipeline: bool = True,
    progress: bool = True,
    on_error: Callable[[Path, str], None] | None = None,
    backend: str | None = None,
) -> BatchReport:
    """Upscale files, folders and glob patterns; failures are reported per file, not raised.

    Errors that concern the whole batch (no such input, unknown model or device, bad option)
    raise :class:`SrkdError` before anything is written.
    """
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from .infer import Upscaler
    from .io.images import read_image, write_image

    if alpha not in ALPHA_MODES:
        raise SrkdError(f"--alpha must be one of {', '.join(ALPHA_MODES)}, got '{alpha}'")
    if outscale is not None and outscale <= 0:
        raise SrkdError(f"--outscale must be positive, got {outscale}")
    # Check cheap things (inputs, outputs, device) before loading the model.
    from .infer import resolve_device, resolve_precision

    sources = expand_inputs(inputs)
    dev = resolve_device(device)
    resolve_precision(precision, dev)
    Upscaler._resolve_tile_arg(tile)
    from .backends import check_backend, default_backend, require

    backend = check_backend(backend or default_backend())
    if backend not in ("torch", "auto"):
        require(backend)

    if isinstance(model, Upscaler):
        upscaler = model
    else:
        upscaler = None
        if model is None or isinstance(model, (str, os.PathLike)):
            from .io.hub import load_model

            net = load_model(None if model is None else str(model), scale=scale).model
        else:
            net = getattr(model, "model", model)
    factor = outscale if outscale is not None else (upscaler.scale if upscaler else net.scale)
    jobs = plan_jobs(sources, output, factor=factor, suffix=suffix, ext=ext)

    report = BatchReport()

    def fail(job: Job, msg: str) -> None:
        report.failed.append((job.src, msg))
        if on_error is not None:
            on_error(job.src, msg)

    for job in jobs:
        if job.error is None and job.dst.exists() and not overwrite:
            job.error = f"{job.dst} already exists; pass --overwrite to replace it"
    todo = [j for j in jobs if j.error is None]
    for job in jobs:
        if job.error is not None:
            fail(job, job.error)
    if not todo:
        return report
    if upscaler is None:
        upscaler = Upscaler(net, device=dev, precision=precision, tile=tile, tile_pad=tile_pad, compile=compile, backend=backend)
    report.info = list(upscaler.info)

    start = time.perf_counter()
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, disable=not progress, transient=True) as bar:
        images = bar.add_task("images", total=len(todo))
        tiles = bar.add_task("tiles", total=1)

        def on_tiles(done: int, total: int) -> None:
            bar.update(tiles, completed=done, total=total)

        def read(job: Job):
            img = read_image(job.src)
            problem = _check_format(img, job.dst)
            if problem:
                raise SrkdError(problem)
            return img

        def write(job: Job, out: np.ndarray) -> None:
            write_image(job.dst, out, overwrite=overwrite, quality=quality, png_compression=png_compression)

        def finish(job: Job, t0: float, pixels: int, future=None, error: str | None = None) -> None:
            if future is not None:
                try:
                    future.result()
                except SrkdError as exc:
                    error = str(exc)
            if error is not None:
                fail(job, error)
            else:
                report.done.append((job.src, job.dst, time.perf_counter() - t0, pixels))
            bar.advance(images)

        # While image k runs through the network, image k+1 is decoded and image k-1 encoded and
        # written, one worker thread each; at most one image is in flight each way, results are
        # reported in input order and every write stays atomic. pipeline=False runs the three in
        # turn (benchmarks/upscale_e2e.py compares them).
        from concurrent.futures import Future, ThreadPoolExecutor

        with ThreadPoolExecutor(1, thread_name_prefix="srkd-read") as reader, \
                ThreadPoolExecutor(1, thread_name_prefix="srkd-write") as writer:
            def submit(pool, fn, *args) -> Future:
                if pipeline:
                    return pool.submit(fn, *args)
                done: Future = Future()
                try:
                    done.set_result(fn(*args))
                except SrkdError as exc:
                    done.set_exception(exc)
                return done

            ahead = submit(reader, read, todo[0])
            pending = None  # (job, t0, pixels, future) of the write in flight
            for i, job in enumerate(todo):
                bar.update(images, description=f"images ({escape(job.src.name)})")
                t0 = time.perf_counter()
                out, error = None, None
                try:
                    img = ahead.result()
                except SrkdError as exc:
                    img, error = None, str(exc)
                if i + 1 < len(todo):
                    ahead = submit(reader, read, todo[i + 1])
                if img is not None:
                    try:
                        out = upscale_array(img, upscaler, outscale=outscale, alpha=alpha, self_ensemble=self_ensemble,
                                            progress=on_tiles)
                    except SrkdError as exc:
                        error = str(exc)
                    del img
                if pending is not None:
                    finish(*pending)  # the previous write lands (and is reported) before this image
                    pending = None
                if out is None:
                    finish(job, t0, 0, error=error)
                else:
                    pending = (job, t0, out.shape[0] * out.shape[1], submit(writer, write, job, out))
                    del out
            if pending is not None:
                finish(*pending)
    report.seconds = time.perf_counter() - start
    return report


from ._callable import make_callable  # noqa: E402

make_callable(__name__, upscale)  # srkd.upscale(image) is upscale() above; the module stays importable
