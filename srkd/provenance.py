"""Where a result came from: srkd's version and git commit, and the machine it ran on.

Recorded in run logs and model files so that a table (srkd bench) can show where each number
was made and refuse to mix what should not be mixed.
"""

from __future__ import annotations

import functools
import platform
import subprocess
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def srkd_version() -> str:
    from . import __version__

    return __version__


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit of the checkout srkd runs from (``+dirty`` with local changes), or None when
    srkd is not running from a git checkout (an installed wheel)."""
    try:
        top = PACKAGE_DIR.parent
        if not (top / ".git").exists():
            return None
        head = subprocess.run(["git", "-C", str(top), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(top), "status", "--porcelain", "--untracked-files=no", "--", "srkd"],
                               capture_output=True, text=True, timeout=10)
        return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def cpu_info() -> dict[str, str]:
    """The first processor's fields in /proc/cpuinfo ("model name", "vendor_id", "flags", ...);
    empty where the file does not exist."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return {}
    info: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            break
        key, _, value = line.partition(":")
        info.setdefault(key.strip(), value.strip())
    return info


def cpu_name() -> str:
    return cpu_info().get("model name") or platform.processor() or platform.machine()


def machine(device) -> str:
    """A short description of what computes on ``device``: the GPU's name, or the CPU's."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_name()


def record(device) -> dict:
    return {"srkd_version": srkd_version(), "git_commit": git_commit(), "machine": machine(device),
            "host": platform.node(), "torch": __import__("torch").__version__}
