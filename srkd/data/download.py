"""``srkd data download``: benchmark images from pinned public sources, verified by sha256.

Every file comes from a public GitHub repository at a fixed commit (``sources.json`` beside this
file: repository, commit, and per file its source path and sha256; docs/protocol.md lists them).
These are the copies srkd's reference data was taken from, so a download reproduces its numbers
bit for bit. Files already present with the right hash are skipped; a file is renamed into place
only after its hash checked out, so a failed or tampered download leaves nothing behind.
``SRKD_DATA_MIRROR`` replaces ``https://raw.githubusercontent.com`` (a local mirror, or a
loopback server in tests); ``SRKD_OFFLINE=1`` forbids downloads.
"""

from __future__ import annotations

import hashlib
import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from ..errors import SrkdError
from ..io.files import atomic_path
from ..io.files import mirrored, offline, sha256_file
from .benchmarks import ALIASES, DATASETS, _find_named, data_root, list_images

RAW = "https://raw.githubusercontent.com"
MANUAL = {
    "manga109": "Manga109 has no checksummed public copy srkd can pin; get it manually from its authors "
    "(manga109.org, research use on request) and put the PNGs in <data-root>/benchmarks/Manga109/HR/",
    "div2k-val": "get DIV2K_valid_HR.zip (and DIV2K_valid_LR_bicubic_X<s>.zip) manually from the official DIV2K site "
    "(data.vision.ee.ethz.ch/cvl/DIV2K) and unpack them into <data-root>/DIV2K/",
}


def sources() -> dict:
    return json.loads(Path(__file__).with_name("sources.json").read_text())


@dataclass
class DownloadReport:
    dataset: str
    folder: Path
    downloaded: int
    present: int


def resolve_names(names) -> list[str]:
    """Dataset keys for command-line names; ``all`` means every downloadable set."""
    keys = []
    for name in names:
        key = ALIASES.get(name.lower(), name.lower())
        if key == "all":
            keys += [k for k in DATASETS if k not in MANUAL]
        elif key not in DATASETS:
            raise SrkdError(f"unknown dataset '{name}' (known: {', '.join(DATASETS)}, or all)")
        else:
            keys.append(key)
    return list(dict.fromkeys(keys))


def download_dataset(name: str, root=None, progress: bool = True) -> DownloadReport:
    """Fetch the missing files of one named set into ``<data root>/benchmarks/<Name>/``."""
    (key,) = resolve_names([name])
    if key in MANUAL:
        raise SrkdError(f"{key} cannot be downloaded automatically: {MANUAL[key]}")
    src = sources()[key]
    dest = data_root(root) / "benchmarks" / src["folder"]
    base = f"{RAW}/{src['repo']}/{src['commit']}/"
    todo = [
        (dest / rel, base + path, digest)
        for rel, (path, digest) in sorted(src["files"].items())
        if not ((dest / rel).is_file() and sha256_file(dest / rel) == digest)
    ]
    if todo and offline():
        raise SrkdError(f"{len(todo)} files of {key} are missing and downloads are disabled (SRKD_OFFLINE/HF_HUB_OFFLINE)")
    if todo:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        with Progress(*columns, disable=not progress, transient=True) as bar:
            task = bar.add_task(f"{key}: downloading", total=len(todo))
            for target, url, digest in todo:
                fetch_verified(mirrored(url, "SRKD_DATA_MIRROR"), target, digest)
                bar.advance(task)
    return DownloadReport(key, dest, len(todo), len(src["files"]) - len(todo))


def fetch_verified(url: str, target: Path, digest: str) -> None:
    """Stream ``url`` to a temporary file and rename it to ``target`` only if its sha256 matches."""
    try:
        response = urllib.request.urlopen(url, timeout=60)  # noqa: S310 (URLs from our pinned table)
    except urllib.error.HTTPError as exc:
        raise SrkdError(f"cannot download {url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        host = urlsplit(url).netloc
        raise SrkdError(
            f"cannot reach {host} ({getattr(exc, 'reason', exc)}); check the connection or set SRKD_DATA_MIRROR"
        ) from None
    sha = hashlib.sha256()
    with response, atomic_path(target, overwrite=True) as tmp, open(tmp, "wb") as out:
        try:
            for chunk in iter(lambda: response.read(1 << 20), b""):
                sha.update(chunk)
                out.write(chunk)
        except OSError as exc:
            raise SrkdError(f"download of {url} was interrupted ({exc}); run the command again") from None
        if sha.hexdigest() != digest:
            raise SrkdError(
                f"{url}: sha256 {sha.hexdigest()[:16]}... does not match the pinned {digest[:16]}...; nothing was kept"
            )


def dataset_status(root=None) -> list[tuple[str, str, int]]:
    """(name, HR folder or '-', image count; -1 if the folder holds a non-image) per named set."""
    rows = []
    base = data_root(root)
    for key in DATASETS:
        found = _find_named(key, base)
        if found is None:
            rows.append((key, "-", 0))
            continue
        try:
            count = len(list_images(found[0]))
        except SrkdError:
            count = -1
        rows.append((key, str(found[0]), count))
    return rows
