"""Model zoo: where each preset's official weights come from, and how they are fetched.

A preset with weights resolves to a converted ``.safetensors`` file in srkd's cache. The original
file is downloaded once, its hash verified, then converted with :mod:`srkd.io.convert`.
``SRKD_ZOO_MIRROR`` replaces the host part of every URL (a local mirror, or a loopback server in
tests). Nothing is downloaded while ``SRKD_OFFLINE`` or ``HF_HUB_OFFLINE`` is set.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from ..errors import SrkdError
from .files import atomic_path

EDSR_URL = "https://cv.snu.ac.kr/research/EDSR/models/"


@dataclass(frozen=True)
class ZooEntry:
    """An official weight release.

    ``sha256`` is the full digest when it is published; otherwise ``hash_prefix`` is the prefix
    embedded in the file name (torch.hub convention), the strongest check the source allows.
    ``url`` is None when the release has no direct download link; ``how_to_get`` then explains.
    """

    filename: str
    url: str | None
    sha256: str | None = None
    hash_prefix: str | None = None
    scale: int | None = None  # head to keep when converting a multi-scale file
    how_to_get: str = ""
    bundled: bool = False


def _edsr(name: str, sha256: str | None = None) -> ZooEntry:
    return ZooEntry(name, EDSR_URL + name, sha256=sha256, hash_prefix=name.rsplit("-", 1)[1].split(".")[0])


_RCAN_HELP = (
    "the official RCAN weights (RCAN_BIX{s}.pt) are only on Google Drive/Dropbox (see yulunzhang/RCAN's README); "
    "download the file, then: srkd convert RCAN_BIX{s}.pt -o rcan-x{s}.safetensors and pass that path"
)

ZOO: dict[str, ZooEntry] = {
    "edsr-baseline-x2": _edsr("edsr_baseline_x2-1bc95232.pt", "1bc9523228fdc3b0a5ddb0d7062001e22b31bbb398ae09cfdefb97e8ee06e171"),
    "edsr-baseline-x3": _edsr("edsr_baseline_x3-abf2a44e.pt", "abf2a44e7a137228efa42a4264a23e12603168d43ac7596b1adef40c649b9240"),
    "edsr-baseline-x4": _edsr("edsr_baseline_x4-6b446fab.pt", "6b446fab734f4de74448d2fd1f3f990f5bae726e49dc7eff2ae9cefe444a1723"),
    "edsr-x2": _edsr("edsr_x2-0edfb8a3.pt"),
    "edsr-x3": _edsr("edsr_x3-ea3ef2c6.pt"),
    "edsr-x4": _edsr("edsr_x4-4f62e9ef.pt"),
    **{
        f"carn-x{s}": ZooEntry(
            "carn.pth",
            "https://raw.githubusercontent.com/nmhkahn/CARN-pytorch/40d3514f81cccd680d846cd5ab07af35f2c8e0e2/checkpoint/carn.pth",
            scale=s,
        )
        for s in (2, 3, 4)
    },
    **{f"carn-m-x{s}": ZooEntry("carn-m.safetensors", None, scale=s, bundled=True) for s in (2, 3, 4)},
    **{f"rcan-x{s}": ZooEntry(f"RCAN_BIX{s}.pt", None, scale=s, how_to_get=_RCAN_HELP.format(s=s)) for s in (2, 3, 4)},
}


def cache_dir() -> Path:
    return Path(os.environ.get("SRKD_CACHE") or Path.home() / ".cache" / "srkd")


def offline() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes", "on") for v in ("SRKD_OFFLINE", "HF_HUB_OFFLINE"))


def mirrored(url: str, env: str = "SRKD_ZOO_MIRROR") -> str:
    """``url`` with its scheme and host replaced by ``$env`` when that is set (mirrors, tests)."""
    mirror = os.environ.get(env)
    if not mirror:
        return url
    parts = urlsplit(url)
    return mirror.rstrip("/") + parts.path


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify(path: Path, entry: ZooEntry) -> str:
    digest = sha256_file(path)
    if entry.sha256 and digest != entry.sha256:
        raise SrkdError(f"{entry.filename}: sha256 {digest[:16]}... does not match the published {entry.sha256[:16]}...")
    if not entry.sha256 and entry.hash_prefix and not digest.startswith(entry.hash_prefix):
        raise SrkdError(f"{entry.filename}: sha256 {digest[:16]}... does not start with the published {entry.hash_prefix}")
    return digest


def download(url: str, dest: Path, progress: bool = True) -> None:
    """Stream ``url`` to ``dest`` atomically, with a progress bar."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

    try:
        response = urllib.request.urlopen(url, timeout=60)  # noqa: S310 (http/https URLs from our table)
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise SrkdError(f"cannot download {url} ({reason}); check the connection or pass a local file") from None
    total = int(response.headers.get("Content-Length") or 0) or None
    columns = ("[progress.description]{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn())
    with response, atomic_path(dest) as tmp, open(tmp, "wb") as out, Progress(*columns, disable=not progress, transient=True) as bar:
        task = bar.add_task(f"download {dest.name}", total=total)
        try:
            for chunk in iter(lambda: response.read(1 << 20), b""):
                out.write(chunk)
                bar.advance(task, len(chunk))
        except OSError as exc:
            raise SrkdError(f"download of {url} was interrupted ({exc}); run the command again") from None


def fetch_entry(entry: ZooEntry, progress: bool = True) -> Path:
    """Return the verified original file of ``entry``, downloading it once into the cache."""
    dest = cache_dir() / "zoo" / entry.filename
    if dest.is_file():
        verify(dest, entry)
        return dest
    if entry.url is None:
        raise SrkdError(entry.how_to_get or f"{entry.filename} has no download source; pass a local path")
    if offline():
        raise SrkdError(
            f"{entry.filename} is not in the cache ({dest.parent}) and downloads are disabled (offline); "
            f"fetch it from {entry.url} when online, or pass a local path"
        )
    download(mirrored(entry.url), dest, progress)
    try:
        verify(dest, entry)
    except SrkdError:
        dest.unlink(missing_ok=True)
        raise
    return dest


def preset_weights(preset: str, progress: bool = True) -> Path:
    """Path of the converted .safetensors file for a preset's official weights."""
    from .convert import convert_file  # local import: convert imports the models, zoo must stay light

    entry = ZOO.get(preset)
    if entry is None:
        raise SrkdError(f"preset '{preset}' has no official weights in the model zoo (presets with weights: {', '.join(ZOO)})")
    if entry.bundled:
        return bundled_model_path()
    converted = cache_dir() / "zoo" / f"{preset}.safetensors"
    if converted.is_file():
        return converted
    original = fetch_entry(entry, progress)
    convert_file(original, converted, scale=entry.scale, overwrite=True, source=entry.url)
    return converted


def bundled_model_path() -> Path:
    return Path(__file__).resolve().parent.parent / "assets" / "carn-m.safetensors"
