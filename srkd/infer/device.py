"""Inference on a device: memory budgets, out-of-memory detection, and scoped thread counts.

Device and precision *resolution* is :mod:`srkd.precision` (shared with training); it is
re-exported here for the inference API.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import torch

from ..precision import cpu_native_bf16, resolve_device, resolve_precision  # noqa: F401 - the inference API

CPU_MEMORY_FRACTION = 0.25  # of MemAvailable, for one batch of tiles (host RAM is shared)
CUDA_MEMORY_FRACTION = 0.7  # of free device memory after the model is loaded


@contextlib.contextmanager
def torch_threads(n: int | None):
    """Run the body with ``n`` torch CPU threads (None: unchanged), then restore the count.

    torch's thread count is process-wide; changing it only inside this context keeps callers'
    settings intact whatever happens in between.
    """
    before = torch.get_num_threads()
    if n is not None and n != before:
        torch.set_num_threads(max(1, int(n)))
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, getattr(torch.cuda, "OutOfMemoryError", ())):
        return True
    if isinstance(exc, (RuntimeError, MemoryError)):
        msg = str(exc).lower()
        return isinstance(exc, MemoryError) or "out of memory" in msg or "can't allocate memory" in msg or "defaultcpuallocator" in msg
    return False


def available_memory(device: torch.device) -> int:
    """Bytes that one batch of tiles may use on ``device``."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * CUDA_MEMORY_FRACTION)
    if device.type == "mps":
        try:
            rec = torch.mps.recommended_max_memory() - torch.mps.current_allocated_memory()
            return int(max(rec, 256 << 20) * 0.5)
        except (AttributeError, RuntimeError):
            return 2 << 30
    return int(host_available_memory() * CPU_MEMORY_FRACTION)


def host_available_memory() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 4 << 30
