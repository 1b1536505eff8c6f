"""Named benchmark sets and HR/LR folders, read the way the field reads them (ecosystem.md §A.1).

Layouts accepted under a data root (``data_root`` argument, else ``$SRKD_DATA``, else
``$SRKD_CACHE/data``, default ``~/.cache/srkd/data``):

* EDSR's ``benchmark/<Name>/HR/*.png`` with ``benchmark/<Name>/LR_bicubic/X<s>/<name>x<s>.png``;
* ``benchmarks/<Name>/HR`` (+ the same ``LR_bicubic``), as in srkd's shared data and ``srkd data download``;
* ``<Name>/HR`` directly under the root;
* DIV2K validation: ``DIV2K/DIV2K_valid_HR`` (+ ``DIV2K_valid_LR_bicubic/X<s>/0801x<s>.png``).

Official LR files are used when present; otherwise LR is made from the modcropped HR with the
MATLAB-exact downscaler and cached on disk under ``$SRKD_CACHE/lr`` (keyed by the HR file's
content). HR is cropped top-left to LR x scale, never resized. Grayscale images are replicated to
RGB (EDSR-PyTorch's ``set_channel``). Folder names: Set5, Set14, B100 (or BSDS100/BSD100),
Urban100, Manga109.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import SrkdError
from ..io.files import cache_dir as cache_root
from ..io.images import decode_image, is_image_path, read_rgb_uint8, to_rgb_uint8, write_image
from .resize import downscale_uint8, modcrop

# name -> folder names it may have on disk
DATASETS: dict[str, tuple[str, ...]] = {
    "set5": ("Set5",),
    "set14": ("Set14",),
    "b100": ("B100", "BSDS100", "BSD100"),
    "urban100": ("Urban100",),
    "manga109": ("Manga109",),
    "div2k-val": ("DIV2K",),
}
LR_VERSION = "matlab-bicubic-v1"  # bump if the downscaler ever changes, to retire cached LR files
ALIASES = {"bsd100": "b100", "bsds100": "b100", "div2k": "div2k-val", "div2k_val": "div2k-val"}
# Files that may sit beside images in a dataset folder (B100's names.tsv, READMEs, thumbnails).
METADATA_EXTS = {".txt", ".md", ".tsv", ".csv", ".json", ".yaml", ".yml", ".mat", ".db", ".ini"}


@dataclass
class Sample:
    name: str
    lr: np.ndarray  # HxWx3 uint8
    hr: np.ndarray  # HxWx3 uint8, cropped to LR x scale




def data_root(explicit=None) -> Path:
    if explicit is not None:
        return Path(explicit).expanduser()
    env = os.environ.get("SRKD_DATA")
    return Path(env).expanduser() if env else cache_root() / "data"


def list_images(folder: Path) -> list[Path]:
    """Image files of a folder, sorted; other files are an error unless they are metadata."""
    images = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.is_dir() or path.suffix.lower() in METADATA_EXTS:
            continue
        if not is_image_path(path):
            raise SrkdError(f"{path} is not an image file; remove it from the dataset folder (expected PNG, JPEG, BMP, WebP or TIFF)")
        images.append(path)
    return images


class Benchmark:
    """HR images with their LR counterparts at one scale; iterating yields :class:`Sample`."""

    def __init__(self, name: str, scale: int, hr_files: list[Path], lr_dir: Path | None, lr_template: str = "{stem}x{s}"):
        if not hr_files:
            raise SrkdError(f"{name}: no HR images found")
        self.name, self.scale, self.hr_files = name, int(scale), hr_files
        self.lr_dir, self.lr_template = lr_dir, lr_template
        if lr_dir is not None:
            for hr in hr_files:
                self._lr_path(hr)  # fail before any work if an LR file is missing

    def __len__(self) -> int:
        return len(self.hr_files)

    def _lr_path(self, hr: Path) -> Path:
        candidates = [self.lr_template.format(stem=hr.stem, s=self.scale), hr.stem]
        for stem in candidates:
            for ext in (hr.suffix, ".png"):
                p = self.lr_dir / f"{stem}{ext}"
                if p.is_file():
                    return p
        raise SrkdError(f"{self.name}: no LR image for {hr.name} in {self.lr_dir} (expected {candidates[0]}{hr.suffix})")

    def _cached_lr(self, stem: str, digest: str, hr: np.ndarray) -> np.ndarray:
        # Keyed by the HR file's content (and the downscaler's version), so an edited or replaced
        # HR file never gets a stale LR, whatever its size and timestamp.
        cached = cache_root() / "lr" / self.name.lower() / f"X{self.scale}" / f"{stem}-{digest[:16]}.png"
        if cached.is_file():
            try:
                return read_rgb_uint8(cached)
            except SrkdError:
                pass  # a damaged cache entry is simply rebuilt
        lr = downscale_uint8(modcrop(hr, self.scale), self.scale)
        try:
            write_image(cached, lr, overwrite=True)
        except (OSError, SrkdError):
            pass  # a read-only cache only costs the downscale next time
        return lr

    def __iter__(self) -> Iterator[Sample]:
        s = self.scale
        for hr_path in self.hr_files:
            try:
                data = hr_path.read_bytes()
            except OSError as exc:
                raise SrkdError(f"cannot read image {hr_path}: {exc.strerror or exc}") from None
            hr = to_rgb_uint8(decode_image(data, hr_path))
            if self.lr_dir is not None:
                lr = read_rgb_uint8(self._lr_path(hr_path))
            else:
                digest = hashlib.sha256(data + LR_VERSION.encode()).hexdigest()
                lr = self._cached_lr(hr_path.stem, digest, hr)
            lh, lw = lr.shape[:2]
            if not (0 <= hr.shape[0] - lh * s < s and 0 <= hr.shape[1] - lw * s < s):
                raise SrkdError(
                    f"{self.name}/{hr_path.name}: LR {lw}x{lh} does not match HR {hr.shape[1]}x{hr.shape[0]} at x{s}"
                )
            yield Sample(hr_path.stem, lr, np.ascontiguousarray(hr[: lh * s, : lw * s]))


def _find_named(name: str, root: Path) -> tuple[Path, Path | None, str] | None:
    """(HR folder, LR folder or None, LR name template) for a named set under ``root``."""
    if name == "div2k-val":
        for base in (root / "DIV2K", root):
            hr = base / "DIV2K_valid_HR"
            if hr.is_dir():
                return hr, base / "DIV2K_valid_LR_bicubic", "{stem}x{s}"
        return None
    for folder in DATASETS[name]:
        for base in (root / "benchmark" / folder, root / "benchmarks" / folder, root / folder):
            if (base / "HR").is_dir():
                return base / "HR", base / "LR_bicubic", "{stem}x{s}"
    return None


def _check_scale(scale) -> int:
    if isinstance(scale, bool) or int(scale) != scale or scale < 1:
        raise SrkdError(f"scale must be a positive integer, got {scale}")
    return int(scale)


def _has_images(folder: Path) -> bool:
    return folder.is_dir() and any(is_image_path(p) and not p.name.startswith(".") for p in folder.iterdir())


def open_benchmark(name: str, scale: int, data_root_dir=None) -> Benchmark:
    """A named test set at ``scale``: set5, set14, b100, urban100, manga109 or div2k-val."""
    scale = _check_scale(scale)
    key = ALIASES.get(name.lower(), name.lower())
    if key not in DATASETS:
        raise SrkdError(f"unknown dataset '{name}' (known: {', '.join(DATASETS)}; or use --hr DIR for a folder)")
    root = data_root(data_root_dir)
    found = _find_named(key, root)
    if found is None:
        folder = "DIV2K/DIV2K_valid_HR" if key == "div2k-val" else f"benchmark(s)/{DATASETS[key][0]}/HR"
        raise SrkdError(
            f"dataset {key} not found under {root} (expected {folder}/*.png, optional LR_bicubic/X{scale}/); "
            f"get it with: srkd data download {key} (or set --data-root / SRKD_DATA)"
        )
    hr_dir, lr_root, template = found
    lr_dir = lr_root / f"X{scale}"
    display = DATASETS[key][0] if key != "div2k-val" else "DIV2K-val"
    # An LR folder without images (e.g. an unpacked archive's empty X8) means "make LR here".
    return Benchmark(display, scale, list_images(hr_dir), lr_dir if _has_images(lr_dir) else None, template)


def folder_benchmark(hr_dir, scale: int, lr_dir=None, name: str | None = None) -> Benchmark:
    """Any folder of HR images (LR made with MATLAB bicubic), or paired HR/LR folders."""
    scale = _check_scale(scale)
    hr_dir = Path(hr_dir)
    if not hr_dir.is_dir():
        raise SrkdError(f"HR folder not found: {hr_dir}")
    if lr_dir is not None and not Path(lr_dir).is_dir():
        raise SrkdError(f"LR folder not found: {lr_dir}")
    return Benchmark(name or hr_dir.name, scale, list_images(hr_dir), Path(lr_dir) if lr_dir else None)
