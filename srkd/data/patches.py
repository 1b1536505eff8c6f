"""Training pairs: sources, decoded-image cache, aligned patch sampling and augmentation.

A *source* is one of

* a folder of HR images (PNG, BMP, JPEG), e.g. ``train/T91``;
* the DIV2K layout: a root holding ``DIV2K_train_HR`` (and ``DIV2K_train_LR_bicubic/X<s>`` when
  present), or the ``*_HR`` folder itself next to its ``*_LR_bicubic`` sibling;
* a text file listing pairs, one per line: ``HR_PATH [LR_PATH]`` (tab- or space-separated, paths
  relative to the file; ``#`` starts a comment).

When a source has no LR files, the LR image is made once from the modcropped HR with the
MATLAB-compatible bicubic downscaler (the protocol's degradation, ``srkd.data.resize``) and kept
under ``$SRKD_CACHE/train-lr`` keyed by the HR file's content, so a later run (or another rank)
reuses it. Decoded images live in memory as uint8, or in a memory-mapped file under
``$SRKD_CACHE/train-decoded`` when they are large (DIV2K: ~6 GB), which also lets the ranks of a
torchrun job share one copy through the page cache.

Sampling is a pure function of ``(seed, step, rank)``: every batch is drawn from its own
generator, so the data position of a run is just its step and a resumed run draws exactly the
batches the interrupted one would have drawn. Images are chosen uniformly (as EDSR-PyTorch and
BasicSR do: one dataset item per image), then a patch position uniformly inside the image.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import SrkdError
from ..io.files import cache_dir as cache_root
from ..io.files import atomic_path

IMAGE_EXTS = (".png", ".bmp", ".jpg", ".jpeg")
LR_CACHE_VERSION = "matlab-bicubic-v1"
MEMMAP_THRESHOLD = 2 << 30  # decoded bytes above which "auto" uses the memory-mapped cache




@dataclass(frozen=True)
class PairSpec:
    """One training image: its HR file and, if the source has one, its LR file."""

    hr: Path
    lr: Path | None = None


@dataclass
class TrainImage:
    name: str
    hr: np.ndarray  # uint8 H x W x 3, modcropped to a multiple of the scale
    lr: np.ndarray  # uint8 H/s x W/s x 3


# --------------------------------------------------------------------------------------------
# Sources


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS)


def _lr_match(hr: Path, lr_dir: Path, scale: int) -> Path | None:
    for name in (f"{hr.stem}x{scale}", hr.stem):
        for ext in (hr.suffix, *IMAGE_EXTS):
            cand = lr_dir / f"{name}{ext}"
            if cand.is_file():
                return cand
    return None


def _folder_pairs(hr_dir: Path, lr_dir: Path | None, scale: int) -> list[PairSpec]:
    files = _images_in(hr_dir)
    if not files:
        raise SrkdError(f"no PNG, BMP or JPEG images in {hr_dir}")
    if lr_dir is None:
        return [PairSpec(f) for f in files]
    pairs = []
    for f in files:
        lr = _lr_match(f, lr_dir, scale)
        if lr is None:
            raise SrkdError(f"{lr_dir} has no LR image for {f.name} (expected {f.stem}x{scale}{f.suffix}); "
                            f"remove the LR folder to have srkd make LR images itself")
        pairs.append(PairSpec(f, lr))
    return pairs


def _list_pairs(path: Path) -> list[PairSpec]:
    pairs = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = [p for p in (line.split("\t") if "\t" in line else line.split()) if p.strip()]
        if len(parts) > 2:
            raise SrkdError(f"{path}:{n}: expected 'HR_PATH [LR_PATH]', got {len(parts)} fields (use a tab between paths with spaces)")
        files = [(path.parent / p.strip()).resolve() for p in parts]
        for f in files:
            if not f.is_file():
                raise SrkdError(f"{path}:{n}: image not found: {f}")
        pairs.append(PairSpec(files[0], files[1] if len(files) == 2 else None))
    if not pairs:
        raise SrkdError(f"{path} lists no image pairs")
    return pairs


def discover(source: str | os.PathLike, scale: int) -> list[PairSpec]:
    """The training pairs of one ``--data`` source."""
    path = Path(source).expanduser()
    if not path.exists():
        raise SrkdError(f"training data not found: {path}")
    if path.is_file():
        if path.suffix.lower() in IMAGE_EXTS:
            return [PairSpec(path.resolve())]
        return _list_pairs(path)
    for hr_name in ("DIV2K_train_HR", "DF2K_train_HR", "Flickr2K_HR"):
        if (path / hr_name).is_dir():
            return discover(path / hr_name, scale)
    lr_dir = None
    if path.name.endswith("_HR"):
        stem = path.name[: -len("_HR")]
        for cand in (path.parent / f"{stem}_LR_bicubic" / f"X{scale}", path.parent / f"{stem}_LR_bicubic_X{scale}"):
            if cand.is_dir():
                lr_dir = cand
                break
    return _folder_pairs(path.resolve(), lr_dir, scale)


# --------------------------------------------------------------------------------------------
# Decoding and the LR cache


class UnreadableImage(SrkdError):
    """A training file that cannot be read or decoded: skipped and reported, not fatal."""


def decode_image(data: bytes, name: str) -> np.ndarray:
    """Encoded bytes -> uint8 H x W x 3 RGB, as the benchmarks read images (grey replicated,
    alpha dropped, 16-bit rounded to 8, EXIF orientation applied)."""
    from ..io.images import decode_image as decode, to_rgb_uint8

    try:
        return to_rgb_uint8(decode(data, name))
    except UnreadableImage:
        raise
    except SrkdError as exc:
        raise UnreadableImage(str(exc)) from None


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UnreadableImage(f"cannot read {path}: {exc.strerror or exc}") from None


def make_lr(hr: np.ndarray, scale: int) -> np.ndarray:
    """The protocol's LR image of an (already modcropped) HR image."""
    from .resize import downscale_uint8

    return downscale_uint8(hr, scale)


def _modcrop(img: np.ndarray, scale: int) -> np.ndarray:
    from .resize import modcrop

    return modcrop(img, scale)


def _lr_cache_path(digest: str, scale: int) -> Path:
    return cache_root() / "train-lr" / f"x{scale}" / f"{digest}.npy"


def load_pair(spec: PairSpec, scale: int) -> TrainImage:
    """Decode one pair; make (or fetch from the cache) the LR image when the source has none."""
    data = _read(spec.hr)
    hr = _modcrop(decode_image(data, str(spec.hr)), scale)
    if spec.lr is not None:
        lr = decode_image(_read(spec.lr), str(spec.lr))
        want = (hr.shape[0] // scale, hr.shape[1] // scale)
        if lr.shape[:2] != want:
            raise SrkdError(f"{spec.lr}: LR is {lr.shape[1]}x{lr.shape[0]} but its HR {spec.hr.name} needs "
                            f"{want[1]}x{want[0]} at x{scale}; is it the X{scale} folder?")
        return TrainImage(spec.hr.stem, hr, lr)
    digest = hashlib.sha1(data + f"|x{scale}|{LR_CACHE_VERSION}".encode()).hexdigest()
    cached = _lr_cache_path(digest, scale)
    lr = None
    if cached.is_file():
        try:
            lr = np.load(cached, allow_pickle=False)
        except (OSError, ValueError):
            lr = None  # a damaged cache entry is rebuilt below
        if lr is not None and (lr.dtype != np.uint8 or lr.shape != (hr.shape[0] // scale, hr.shape[1] // scale, 3)):
            lr = None
    if lr is None:
        lr = make_lr(hr, scale)
        try:
            with atomic_path(cached, overwrite=True) as tmp:
                np.save(tmp, lr, allow_pickle=False)
        except OSError:
            pass  # a read-only cache only costs the downscale next time
    return TrainImage(spec.hr.stem, hr, np.ascontiguousarray(lr))


def _decoded_key(specs: list[PairSpec], scale: int) -> str:
    h = hashlib.sha256(f"x{scale}|{LR_CACHE_VERSION}".encode())
    for s in specs:
        for p in (s.hr, s.lr):
            if p is None:
                h.update(b"-")
                continue
            st = p.stat()
            h.update(f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns};".encode())
    return h.hexdigest()[:24]


def _estimate_bytes(specs: list[PairSpec]) -> int:
    from PIL import Image

    total = 0
    for s in specs:
        try:
            with Image.open(s.hr) as im:
                w, h = im.size
        except OSError:
            continue
        total += w * h * 3
    return total + total // 4  # plus LR at x2 (the largest LR share)


# --------------------------------------------------------------------------------------------
# The training set


class TrainingSet:
    """Decoded training pairs and the deterministic batch sampler.

    ``images`` holds only the usable pairs; ``skipped`` names those smaller than the LR patch.
    """

    def __init__(self, sources, scale: int, patch: int, cache: str = "auto", progress: bool = True):
        if not sources:
            raise SrkdError("no training data: give --data FOLDER (repeatable), a DIV2K root or a pair-list file")
        self.scale, self.patch = int(scale), int(patch)
        specs: list[PairSpec] = []
        for src in sources:
            specs.extend(discover(src, self.scale))
        self.n_files = len(specs)
        self.unreadable: list[tuple[str, str]] = []  # (file, reason): reported and left out, never a crash mid-run
        if cache == "auto":
            cache = "memmap" if _estimate_bytes(specs) > MEMMAP_THRESHOLD else "memory"
        self.cache = cache
        if cache == "memmap":
            images = self._load_memmap(specs, progress)
        else:
            images = self._load_all(specs, progress)
        self.images = [im for im in images if min(im.lr.shape[:2]) >= self.patch]
        self.skipped = [im.name for im in images if min(im.lr.shape[:2]) < self.patch]
        if not images:
            raise SrkdError(f"none of the {self.n_files} training images could be read (first: {self.unreadable[0][1]})")
        if not self.images:
            smallest = max((min(im.lr.shape[:2]) for im in images), default=0)
            raise SrkdError(f"all {len(images)} training images are smaller than the LR patch ({self.patch} px; "
                            f"the largest LR side available is {smallest} px): use a smaller --patch")

    # -- loading ---------------------------------------------------------------------------
    def _load_all(self, specs: list[PairSpec], progress: bool) -> list[TrainImage]:
        from rich.progress import Progress

        out = []
        with Progress(*Progress.get_default_columns(), disable=not progress, transient=True) as bar:
            task = bar.add_task(f"loading {len(specs)} training images (x{self.scale})", total=len(specs))
            for spec in specs:
                im = self._try_load(spec)
                if im is not None:
                    out.append(im)
                bar.advance(task)
        return out

    def _try_load(self, spec: PairSpec) -> TrainImage | None:
        try:
            return load_pair(spec, self.scale)
        except UnreadableImage as exc:
            self.unreadable.append((str(spec.hr), str(exc)))
            return None

    def _load_memmap(self, specs: list[PairSpec], progress: bool) -> list[TrainImage]:
        folder = cache_root() / "train-decoded"
        key = _decoded_key(specs, self.scale)
        data_path, index_path = folder / f"{key}.u8", folder / f"{key}.json"
        if not (data_path.is_file() and index_path.is_file()):
            self._build_memmap(specs, data_path, index_path, progress)
        try:
            index = json.loads(index_path.read_text())
            blob = np.memmap(data_path, dtype=np.uint8, mode="r")
        except (OSError, ValueError) as exc:
            raise SrkdError(f"decoded-image cache {data_path} is unreadable ({exc}); delete it and rerun") from None
        if index.get("bytes") != blob.size:
            raise SrkdError(f"decoded-image cache {data_path} is truncated; delete it and rerun")
        if not self.unreadable:
            self.unreadable = [tuple(x) for x in index.get("unreadable", [])]
        out = []
        for e in index["images"]:
            hr = blob[e["hr_offset"]: e["hr_offset"] + int(np.prod(e["hr_shape"]))].reshape(e["hr_shape"])
            lr = blob[e["lr_offset"]: e["lr_offset"] + int(np.prod(e["lr_shape"]))].reshape(e["lr_shape"])
            out.append(TrainImage(e["name"], hr, lr))
        return out

    def _build_memmap(self, specs, data_path: Path, index_path: Path, progress: bool) -> None:
        from rich.progress import Progress

        entries, offset = [], 0
        with atomic_path(data_path, overwrite=True) as tmp, open(tmp, "wb") as f:
            with Progress(*Progress.get_default_columns(), disable=not progress, transient=True) as bar:
                task = bar.add_task(f"decoding {len(specs)} training images into {data_path.parent}", total=len(specs))
                for spec in specs:
                    im = self._try_load(spec)
                    if im is None:
                        bar.advance(task)
                        continue
                    e = {"name": im.name, "hr_shape": list(im.hr.shape), "hr_offset": offset}
                    f.write(im.hr.tobytes())
                    offset += im.hr.size
                    e.update(lr_shape=list(im.lr.shape), lr_offset=offset)
                    f.write(im.lr.tobytes())
                    offset += im.lr.size
                    entries.append(e)
                    bar.advance(task)
        with atomic_path(index_path, overwrite=True) as tmp:
            tmp.write_text(json.dumps({"bytes": offset, "images": entries, "unreadable": self.unreadable}))

    # -- sampling --------------------------------------------------------------------------
    @property
    def nbytes(self) -> int:
        return sum(im.hr.nbytes + im.lr.nbytes for im in self.images)

    def sample(self, seed: int, step: int, rank: int, batch: int, augment: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """The batch of training step ``step`` on process ``rank``: uint8 (B, p, p, 3) LR and (B, ps, ps, 3) HR."""
        rng = np.random.default_rng([int(seed), int(step), int(rank), 0])
        p, s = self.patch, self.scale
        lr_out = np.empty((batch, p, p, 3), np.uint8)
        hr_out = np.empty((batch, p * s, p * s, 3), np.uint8)
        # all draws at once: a generator call costs more than the slicing it drives
        picks = rng.integers(len(self.images), size=batch)
        where = rng.random((batch, 2))
        ks = rng.integers(8, size=batch) if augment else np.zeros(batch, np.int64)
        for b, i in enumerate(picks):
            im = self.images[i]
            h, w = im.lr.shape[:2]
            y, x = int(where[b, 0] * (h - p + 1)), int(where[b, 1] * (w - p + 1))
            lr = im.lr[y: y + p, x: x + p]
            hr = im.hr[y * s: (y + p) * s, x * s: (x + p) * s]
            if ks[b]:
                lr, hr = dihedral(lr, int(ks[b])), dihedral(hr, int(ks[b]))
            lr_out[b] = lr
            hr_out[b] = hr
        return lr_out, hr_out


def dihedral(img: np.ndarray, k: int) -> np.ndarray:
    """One of the 8 flips/90-degree rotations of an H x W x C array (k in 0..7).

    Bit 0 flips left-right, bit 1 flips up-down, bit 2 transposes. OpenCV does it for 3-channel
    uint8 about 20x faster than numpy's strided copies (0.5 ms per 192 px patch).
    """
    if k & 3:
        code = {1: 1, 2: 0, 3: -1}[k & 3]
        img = cv2_flip(img, code)
    if k & 4:
        img = cv2_transpose(img)
    return img


def cv2_flip(img: np.ndarray, code: int) -> np.ndarray:
    import cv2

    out = cv2.flip(img, code)
    return out if out.ndim == img.ndim else out[..., None]


def cv2_transpose(img: np.ndarray) -> np.ndarray:
    import cv2

    out = cv2.transpose(img)
    return out if out.ndim == img.ndim else out[..., None]


class Batches:
    """Batches for steps ``start, start+1, ...``; with ``workers`` > 0, assembled ahead in threads.

    Threads rather than processes: slicing uint8 arrays is cheap and mostly releases the GIL,
    and a worker process would take a core from torch on a 2-core machine.
    """

    def __init__(self, dataset: TrainingSet, seed: int, rank: int, batch: int, augment: bool, start: int, workers: int = 0):
        self.dataset, self.seed, self.rank, self.batch, self.augment = dataset, seed, rank, batch, augment
        self.next_step = start
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="srkd-data") if workers > 0 else None
        self.ahead = deque()
        self.depth = workers + 1
        self._lock = threading.Lock()

    def _make(self, step: int):
        return self.dataset.sample(self.seed, step, self.rank, self.batch, self.augment)

    def get(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        if self.pool is None:
            return self._make(step)
        with self._lock:
            while self.ahead and self.ahead[0][0] != step:
                self.ahead.popleft()  # only after a jump, which the engine never makes
            if not self.ahead:
                self.next_step = step
            while len(self.ahead) < self.depth:
                self.ahead.append((self.next_step, self.pool.submit(self._make, self.next_step)))
                self.next_step += 1
            _, fut = self.ahead.popleft()
            self.ahead.append((self.next_step, self.pool.submit(self._make, self.next_step)))
            self.next_step += 1
        return fut.result()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.pool = None
