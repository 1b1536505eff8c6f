"""A cache of the Upscaler's verified decisions, so that each run does not check them again.

Building an :class:`~srkd.infer.Upscaler` checks two things on real pixels: that srkd.infer.fusion's
rewrites leave the model's output unchanged, and that the low precision chosen by
``--precision auto`` stays within the accuracy bound. Both depend only on the weights, srkd, torch
and the device, so each verified answer is kept in ``$SRKD_CACHE/upscale-decisions.json`` under a
key made of exactly those (the weights' hash, srkd's and torch's versions, the device and its
name, the requested precision). Any change of a key part is a new key: the decision is made and
verified again. A damaged or unwritable cache only costs the checks.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from torch import nn

FORMAT = 1


def cache_path() -> Path:
    from .data.benchmarks import cache_root

    return cache_root() / "upscale-decisions.json"


def weights_hash(model: nn.Module) -> str:
    h = hashlib.blake2b(digest_size=16)
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


def key(model: nn.Module, device: torch.device, requested: str) -> str:
    from .provenance import machine, srkd_version

    parts = {"format": FORMAT, "weights": weights_hash(model), "arch": getattr(model, "arch", type(model).__name__),
             "srkd": srkd_version(), "torch": torch.__version__, "device": str(device), "machine": machine(device),
             "precision": requested}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


def load(k: str) -> dict | None:
    try:
        entry = json.loads(cache_path().read_text()).get(k)
    except (OSError, ValueError, AttributeError):
        return None
    return entry if isinstance(entry, dict) else None


def store(k: str, decision: dict) -> None:
    from .io.files import atomic_path

    path = cache_path()
    try:
        table = json.loads(path.read_text()) if path.is_file() else {}
        if not isinstance(table, dict):
            table = {}
    except (OSError, ValueError):
        table = {}
    table[k] = decision
    if len(table) > 256:  # keep the newest entries (dicts keep insertion order)
        table = dict(list(table.items())[-256:])
    try:
        with atomic_path(path, overwrite=True) as tmp:
            tmp.write_text(json.dumps(table))
    except Exception:  # noqa: BLE001 - a read-only cache only costs the checks next time
        pass
