"""Converters from other projects' weight files to srkd ``.safetensors`` model files.

Supported sources (the architecture is detected from key names and tensor shapes):
  * EDSR-PyTorch ``.pt`` state dicts of EDSR, EDSR-baseline and RCAN (official names);
  * BasicSR ``{params|params_ema: state_dict}`` files of EDSR and RCAN (renamed to the official
    names; BasicSR keeps the mean as a constant, so the DIV2K mean and range 255 are used);
  * official CARN / CARN-M files (multi-scale ``up2/up3/up4`` heads: keep all, or one with ``scale``);
  * a plain safetensors state dict with any of the above names.
Legacy pickles are read with ``torch.load(weights_only=True)`` only: no code is executed.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..errors import SrkdError
from ..models.registry import ARCHS, build_model, spec_of
from .checkpoint import save_model
from .files import sha256_file

WRAPPER_KEYS = ("params_ema", "params", "state_dict", "model", "net", "netG")


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a foreign weight file as a flat ``{name: tensor}`` dict, without executing code."""
    path = Path(path)
    if not path.is_file():
        raise SrkdError(f"weight file not found: {path}")
    if path.suffix == ".safetensors":
        from .checkpoint import read_tensors

        return read_tensors(path)[0]
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors come in many types; all mean "not a safe weight file"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SrkdError(f"cannot read {path} as a PyTorch weight file ({first[:200]})") from None
    for key in WRAPPER_KEYS:
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise SrkdError(f"{path} does not hold a state dict of tensors")
    prefix = _common_prefix(list(obj))
    return {k[len(prefix):]: v.float() if v.is_floating_point() else v for k, v in obj.items()}


def _common_prefix(keys: list[str]) -> str:
    for prefix in ("module.", "netG.", "model."):
        if keys and all(k.startswith(prefix) for k in keys):
            return prefix
    return ""


def detect(sd: dict, arch: str | None = None) -> tuple[str, dict, dict, str]:
    """Return (arch, config, official-named state dict, source format) for a foreign state dict.

    Every architecture's spec lists the layouts it is recognised in; the first that matches wins
    (specs are tried in registry order, ``arch`` restricts the search to one).
    """
    specs = [spec_of(arch)] if arch else list(ARCHS.values())
    for spec in specs:
        for fmt in spec.formats:
            if fmt.detect(sd):
                official = fmt.to_official(sd) if fmt.to_official else sd
                return spec.name, spec.read_config(official), official, fmt.name
    if arch:
        try:
            found = detect(sd)[0]
        except SrkdError:
            found = None
        if found:
            raise SrkdError(f"the file holds {found} weights, not {arch}")
    expected = "; ".join(f"{s.name} ({', '.join(f.name for f in s.formats)})" for s in ARCHS.values())
    sample = ", ".join(sorted(sd)[:5])
    hint = f" as {arch}" if arch else ""
    raise SrkdError(f"cannot recognise the weights{hint} (keys like {sample}); expected one of: {expected}")


def _select_head(arch: str, cfg: dict, sd: dict, scale: int | None) -> tuple[dict, dict]:
    if scale is None:
        return cfg, sd
    scales = cfg.get("scales", [cfg["scale"]])
    if int(scale) not in scales:
        raise SrkdError(f"the weights are for x{', x'.join(map(str, scales))}; x{scale} is not available")
    if arch.startswith("carn") and len(scales) > 1:
        keep = f"upsample.up{scale}."
        sd = {(k.replace(keep, "upsample.up.") if k.startswith(keep) else k): v for k, v in sd.items()
              if not k.startswith("upsample.up") or k.startswith(keep)}
        cfg = {**cfg, "scales": [int(scale)]}
    return {**cfg, "scale": int(scale)}, sd


def convert_state_dict(sd: dict, arch: str | None = None, scale: int | None = None,
                       res_scale: float | None = None) -> tuple[nn.Module, str]:
    """Build the srkd model for a foreign state dict and load it strictly."""
    arch_name, cfg, off, fmt = detect(sd, arch)
    cfg, off = _select_head(arch_name, cfg, off, scale)
    if res_scale is not None:
        if arch_name != "edsr":
            raise SrkdError("--res-scale applies to EDSR only")
        cfg["res_scale"] = float(res_scale)
    model = build_model(arch_name, **cfg)
    try:
        model.load_state_dict(off, strict=True)
    except RuntimeError as exc:
        raise SrkdError(f"weights look like {arch_name} but do not load ({str(exc).splitlines()[0]})") from None
    return model.eval(), fmt


def convert_file(src, dst, arch: str | None = None, scale: int | None = None, res_scale: float | None = None,
                 overwrite: bool = False, source: str | None = None) -> nn.Module:
    """Convert ``src`` to an srkd ``.safetensors`` model file at ``dst`` and return the model."""
    src, dst = Path(src), Path(dst)
    if dst.suffix != ".safetensors":
        raise SrkdError(f"output must end in .safetensors, got {dst.name}")
    if dst.exists() and not overwrite:
        raise SrkdError(f"{dst} already exists; pass --overwrite to replace it")
    model, fmt = convert_state_dict(read_state_dict(src), arch, scale, res_scale)
    provenance = {"converted_from": source or src.name, "source_format": fmt, "source_sha256": sha256_file(src)}
    save_model(model, dst, provenance=provenance, overwrite=overwrite)
    return model
