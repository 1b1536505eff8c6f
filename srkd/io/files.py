"""Atomic file writes: never leave a half-written output behind."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from ..errors import SrkdError


def check_writable(path: Path, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise SrkdError(f"{path} already exists; pass --overwrite to replace it")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, overwrite: bool = True):
    """Yield a temporary path next to ``path``; rename it over ``path`` only if the block succeeds.

    The temporary name keeps the suffix so that writers which pick a format by extension work.
    """
    path = Path(path)
    check_writable(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        # mkstemp creates 0600 files; give the result the permissions a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
