"""safetensors model files with srkd metadata.

A model file holds the state dict under the architecture's official key names and, in the
safetensors header (string to string), ``format=srkd``, ``format_version``, ``arch``, ``config``
(JSON: every constructor argument, including those the weights cannot reveal such as
``res_scale``, ``rgb_range`` and ``rgb_mean``), ``scale`` and, for trained models, ``provenance``
(JSON: method, teacher, steps, data, metrics ...). Loading never executes code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save
from torch import nn

from ..errors import SrkdError
from ..models.registry import build_model
from .files import atomic_path, write_bytes

FORMAT_VERSION = "1"


@dataclass
class ModelFile:
    """A model loaded from disk, with what its header said."""

    model: nn.Module
    path: Path
    metadata: dict = field(default_factory=dict)

    @property
    def provenance(self) -> dict:
        return json.loads(self.metadata.get("provenance", "{}"))


def model_metadata(model: nn.Module, provenance: dict | None = None) -> dict[str, str]:
    meta = {
        "format": "srkd",
        "format_version": FORMAT_VERSION,
        "arch": model.arch,
        "config": json.dumps(model.config(), sort_keys=True),
        "scale": str(model.scale),
    }
    if provenance:
        meta["provenance"] = json.dumps(provenance, sort_keys=True, default=str)
    return meta


def save_model(model: nn.Module, path, provenance: dict | None = None, overwrite: bool = True) -> Path:
    """Write ``model`` as a standalone .safetensors file (atomically)."""
    path = Path(path)
    state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in model.state_dict().items()}
    data = save(state, metadata=model_metadata(model, provenance))
    with atomic_path(path, overwrite=overwrite) as tmp:
        write_bytes(tmp, data)  # a full disk is an OSError here, one line from atomic_path
    return path


def read_header(path) -> dict[str, str]:
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as exc:
        raise SrkdError(f"{path} is not a readable safetensors file ({exc}); is it corrupt or truncated?") from None


def read_tensors(path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    path = Path(path)
    if not path.is_file():
        raise SrkdError(f"model file not found: {path}")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise SrkdError(f"{path} is not a readable safetensors file ({exc}); is it corrupt or truncated?") from None
    return tensors, meta


def load_model_file(path, scale: int | None = None) -> ModelFile:
    """Build the architecture named in the header and load the weights with ``strict=True``.

    ``scale`` selects the head of a multi-scale model; for a single-scale model it must match.
    """
    path = Path(path)
    if path.suffix.lower() in (".pt", ".pth", ".ckpt", ".bin"):
        raise SrkdError(f"{path} is a PyTorch pickle; convert it first: srkd convert {path} -o model.safetensors")
    tensors, meta = read_tensors(path)
    if meta.get("format") != "srkd" or "arch" not in meta:
        raise SrkdError(f"{path} has no srkd metadata; import foreign weights with: srkd convert {path} -o out.safetensors")
    try:
        config = json.loads(meta["config"])
    except (KeyError, json.JSONDecodeError):
        raise SrkdError(f"{path}: the 'config' metadata is missing or not JSON") from None
    model = build_model(meta["arch"], **config)
    if scale is not None and int(scale) != model.scale:
        if int(scale) in model.scales:
            model.set_scale(int(scale))
        else:
            raise SrkdError(f"{path} is a x{model.scale} model (heads: x{', x'.join(map(str, model.scales))}); it cannot run at x{scale}")
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise SrkdError(f"{path}: weights do not match the {meta['arch']} configuration in its header ({first})") from None
    model.eval()
    return ModelFile(model, path, meta)
