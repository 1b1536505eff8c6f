"""Model zoo: fetching each preset's official weights (declared in its architecture's spec).

A preset with weights resolves to a converted ``.safetensors`` file in srkd's cache. The original
file is downloaded once, its hash verified, then converted with :mod:`srkd.io.convert`.
``SRKD_ZOO_MIRROR`` replaces the host part of every URL (a local mirror, or a loopback server in
tests). Nothing is downloaded while ``SRKD_OFFLINE`` or ``HF_HUB_OFFLINE`` is set.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import SrkdError
from ..models.registry import ARCHS
from ..models.spec import ZooEntry
from .files import cache_dir, download, mirrored, offline, sha256_file  # noqa: F401 - also importable from here

#: preset -> its official weights, gathered from the architectures' specs
ZOO: dict[str, ZooEntry] = {preset: entry for spec in ARCHS.values() for preset, entry in spec.weights.items()}


def verify(path: Path, entry: ZooEntry) -> str:
    digest = sha256_file(path)
    if entry.sha256 and digest != entry.sha256:
        raise SrkdError(f"{entry.filename}: sha256 {digest[:16]}... does not match the published {entry.sha256[:16]}...")
    if not entry.sha256 and entry.hash_prefix and not digest.startswith(entry.hash_prefix):
        raise SrkdError(f"{entry.filename}: sha256 {digest[:16]}... does not start with the published {entry.hash_prefix}")
    return digest


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
