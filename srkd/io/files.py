"""Atomic file writes: never leave a half-written output behind."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

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
        try:
            yield Path(tmp)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise SrkdError(f"no space left on the device for {path} ({_free(path.parent)} free): free some space "
                                f"and run the same command again; {'the existing file is untouched' if path.exists() else 'nothing was written'}") from None
            raise
        # mkstemp creates 0600 files; give the result the permissions a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` with Python's own file I/O, so that a full disk raises OSError
    (ENOSPC), which :func:`atomic_path` turns into one line; native writers report it as a bare
    RuntimeError."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _free(folder: Path) -> str:
    try:
        return f"{shutil.disk_usage(folder).free / 2**20:.0f} MiB"
    except OSError:
        return "unknown"


LOCK_NAME = ".srkd.lock"


class FolderLock:
    """An exclusive OS lock (``flock``) on ``folder/.srkd.lock`` while a run or bench writes there.

    A second srkd process on the same folder is refused with one line naming the holder. The lock
    belongs to the open file, so the kernel drops it when the process dies, even by SIGKILL: a
    lock file left behind by a killed run never blocks the next one.
    """

    def __init__(self, folder, what: str = "run folder"):
        self.folder, self.what, self.fd = Path(folder), what, None

    def __enter__(self):
        try:
            import fcntl
        except ImportError:  # no flock (Windows): no protection, as before
            return self
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = ""
            with contextlib.suppress(OSError):
                holder = os.pread(fd, 4096, 0).decode(errors="replace").strip()
            os.close(fd)
            raise SrkdError(f"{self.folder} is in use by another srkd process ({holder or 'pid unknown'}); wait for it "
                            f"to finish or stop it, or choose another --out") from None
        os.ftruncate(fd, 0)
        cmd = " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv))[:300]
        os.pwrite(fd, f"pid {os.getpid()}: {cmd}\n".encode(), 0)
        self.fd = fd
        return self

    def __exit__(self, *exc):
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, 0)
            os.close(self.fd)  # releases the lock
            self.fd = None


# ------------------------------------------------------------------ the cache and downloads


def cache_dir() -> Path:
    """srkd's cache: ``$SRKD_CACHE``, else ``~/.cache/srkd`` (LR patches, converted weights, exports, decisions)."""
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


def download(url: str, dest: Path, progress: bool = True) -> None:
    """Stream ``url`` to ``dest`` atomically, with a progress bar."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

    import urllib.error
    import urllib.request

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
