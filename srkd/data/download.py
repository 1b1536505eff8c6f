"""``srkd data download``: benchmark images from pinned public sources, verified by sha256.

The sources (repositories at fixed commits, see ``sources.json`` beside this file and
docs/protocol.md) are the ones srkd's reference data was copied from, so a download reproduces
the numbers in docs/results.md bit for bit. ``SRKD_DATA_MIRROR`` replaces
``https://raw.githubusercontent.com`` (a local mirror, or a loopback server in tests).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import SrkdError
from ..io.zoo import download, mirrored, offline, sha256_file
from .benchmarks import DATASETS, _find_named, data_root, list_images

RAW = "https://raw.githubusercontent.com"
MANUAL = {
    "manga109": "Manga109 has no checksummed public copy srkd can pin; request it from the authors "
    "(manga109.org) and place the PNGs in <data-root>/benchmarks/Manga109/HR/",
    "div2k-val": "get DIV2K_valid_HR.zip from the official DIV2K site (data.vision.ee.ethz.ch/cvl/DIV2K) "
    "and unpack it to <data-root>/DIV2K/DIV2K_valid_HR/",
}


def sources() -> dict:
    return json.loads((Path(__file__).with_name("sources.json")).read_text())


@dataclass
class DownloadReport:
    dataset: str
    folder: Path
    downloaded: int
    present: int


def download_dataset(name: str, root=None, progress: bool = True) -> DownloadReport:
    key = name.lower()
    if key not in DATASETS:
        raise SrkdError(f"unknown dataset '{name}' (known: {', '.join(DATASETS)})")
    if key in MANUAL:
        raise SrkdError(f"{key} cannot be downloaded automatically: {MANUAL[key]}")
    src = sources()[key]
    dest = data_root(root) / "benchmarks" / src["folder"]
    base = f"{RAW}/{src['repo']}/{src['commit']}/"
    todo = []
    for rel, (path, digest) in sorted(src["files"].items()):
        target = dest / rel
        if not (target.is_file() and sha256_file(target) == digest):
            todo.append((target, base + path, digest))
    if todo and offline():
        raise SrkdError(f"{len(todo)} files of {key} are missing and downloads are disabled (offline)")
    for target, url, digest in todo:
        download(mirrored(url, "SRKD_DATA_MIRROR"), target, progress)
        got = sha256_file(target)
        if got != digest:
            target.unlink(missing_ok=True)
            raise SrkdError(f"{target.name}: sha256 {got[:16]}... does not match the pinned {digest[:16]}...; nothing kept")
    return DownloadReport(key, dest, len(todo), len(src["files"]) - len(todo))


def dataset_status(root=None) -> list[tuple[str, str, int]]:
    """(name, folder or '-', image count) for every named dataset under the data root."""
    rows = []
    base = data_root(root)
    for key in DATASETS:
        found = _find_named(key, base)
        if found is None:
            rows.append((key, "-", 0))
        else:
            try:
                count = len(list_images(found[0]))
            except SrkdError:
                count = -1
            rows.append((key, str(found[0]), count))
    return rows
