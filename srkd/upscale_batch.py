"""Files, folders and glob patterns through an Upscaler (the library behind ``srkd upscale``).

Outputs are planned first (names, formats, existing files), so that a batch error is raised
before anything is written; then images are decoded ahead and written behind the network, one
image each way, every write atomic, failures reported per file.
"""

from __future__ import annotations

import glob
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from .errors import SrkdError
from .upscale_image import ALPHA_MODES, upscale_array

READ_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
WRITE_EXTS = {"png": ".png", "jpg": ".jpg", "jpeg": ".jpg", "webp": ".webp", "tiff": ".tiff", "tif": ".tif", "bmp": ".bmp"}
EXT_CHOICES = ("same", "png", "jpg", "webp", "tiff", "bmp")
_NO_ALPHA = (".jpg", ".jpeg", ".bmp")
_EIGHT_BIT_ONLY = (".jpg", ".jpeg", ".webp", ".bmp")
_FILE_SUFFIXES = frozenset(WRITE_EXTS.values()) | {".jpeg"}


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
    from .infer import Upscaler

    sources, dev, backend = _check_batch(inputs, alpha, outscale, device, precision, tile, backend)
    upscaler, net = (model, None) if isinstance(model, Upscaler) else (None, _load_net(model, scale))
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
    _Pipeline(upscaler, report, fail, dict(outscale=outscale, alpha=alpha, self_ensemble=self_ensemble),
              dict(overwrite=overwrite, quality=quality, png_compression=png_compression), pipeline).run(todo, progress)
    report.seconds = time.perf_counter() - start
    return report


def _check_batch(inputs, alpha, outscale, device, precision, tile, backend):
    """Check the cheap things (inputs, options, device) before a model is loaded."""
    from .backends import check_backend, default_backend, require
    from .infer import Upscaler, resolve_device, resolve_precision

    if alpha not in ALPHA_MODES:
        raise SrkdError(f"--alpha must be one of {', '.join(ALPHA_MODES)}, got '{alpha}'")
    if outscale is not None and outscale <= 0:
        raise SrkdError(f"--outscale must be positive, got {outscale}")
    sources = expand_inputs(inputs)
    dev = resolve_device(device)
    resolve_precision(precision, dev)
    Upscaler._resolve_tile_arg(tile)
    backend = check_backend(backend or default_backend())
    if backend not in ("torch", "auto"):
        require(backend)
    return sources, dev, backend


def _load_net(model, scale):
    if model is None or isinstance(model, (str, os.PathLike)):
        from .io.hub import load_model

        return load_model(None if model is None else str(model), scale=scale).model
    return getattr(model, "model", model)


class _Pipeline:
    """While image k runs through the network, image k+1 is decoded and image k-1 encoded and
    written, one worker thread each; at most one image is in flight each way, results are
    reported in input order and every write stays atomic. ``pipeline=False`` runs the three in
    turn (benchmarks/upscale_e2e.py compares them)."""

    def __init__(self, upscaler, report: BatchReport, fail, array_options: dict, write_options: dict, pipeline: bool):
        self.upscaler, self.report, self.fail = upscaler, report, fail
        self.array_options, self.write_options, self.pipeline = array_options, write_options, pipeline

    def read(self, job: Job):
        from .io.images import read_image

        img = read_image(job.src)
        problem = _check_format(img, job.dst)
        if problem:
            raise SrkdError(problem)
        return img

    def write(self, job: Job, out: np.ndarray) -> None:
        from .io.images import write_image

        write_image(job.dst, out, **self.write_options)

    def submit(self, pool, fn, *args):
        from concurrent.futures import Future

        if self.pipeline:
            return pool.submit(fn, *args)
        done: Future = Future()
        try:
            done.set_result(fn(*args))
        except SrkdError as exc:
            done.set_exception(exc)
        return done

    def finish(self, job: Job, t0: float, pixels: int, future=None, error: str | None = None) -> None:
        if future is not None:
            try:
                future.result()
            except SrkdError as exc:
                error = str(exc)
        if error is not None:
            self.fail(job, error)
        else:
            self.report.done.append((job.src, job.dst, time.perf_counter() - t0, pixels))
        self.bar.advance(self.images)

    def run(self, todo: list[Job], progress: bool) -> None:
        from concurrent.futures import ThreadPoolExecutor

        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TextColumn("ETA"), TimeRemainingColumn())
        with Progress(*columns, disable=not progress, transient=True) as self.bar, \
                ThreadPoolExecutor(1, thread_name_prefix="srkd-read") as reader, \
                ThreadPoolExecutor(1, thread_name_prefix="srkd-write") as writer:
            self.images = self.bar.add_task("images", total=len(todo))
            self.tiles = self.bar.add_task("tiles", total=1)
            self._loop(todo, reader, writer)

    def _loop(self, todo: list[Job], reader, writer) -> None:
        from rich.markup import escape

        def on_tiles(done: int, total: int) -> None:
            self.bar.update(self.tiles, completed=done, total=total)

        ahead = self.submit(reader, self.read, todo[0])
        pending = None  # (job, t0, pixels, future) of the write in flight
        for i, job in enumerate(todo):
            self.bar.update(self.images, description=f"images ({escape(job.src.name)})")
            t0 = time.perf_counter()
            out, error = None, None
            try:
                img = ahead.result()
            except SrkdError as exc:
                img, error = None, str(exc)
            if i + 1 < len(todo):
                ahead = self.submit(reader, self.read, todo[i + 1])
            if img is not None:
                try:
                    out = upscale_array(img, self.upscaler, progress=on_tiles, **self.array_options)
                except SrkdError as exc:
                    error = str(exc)
                del img
            if pending is not None:
                self.finish(*pending)  # the previous write lands (and is reported) before this image
                pending = None
            if out is None:
                self.finish(job, t0, 0, error=error)
            else:
                pending = (job, t0, out.shape[0] * out.shape[1], self.submit(writer, self.write, job, out))
                del out
        if pending is not None:
            self.finish(*pending)
