"""Architecture and preset registries (plain dicts) and the model descriptor.

A *preset* is a named architecture configuration (``edsr-x4``); a *custom* configuration is
written ``ARCH:key=value,...`` (``edsr:n_feats=64,n_resblocks=32,res_scale=0.1,scale=4``).
Which presets have official weights, and where they come from, lives in ``srkd.io.zoo``.
"""

from __future__ import annotations

import inspect
import json
import re
from dataclasses import dataclass, field

from torch import nn

from ..errors import SrkdError
from .carn import CARN, CARNM
from .edsr import EDSR
from .rcan import RCAN

ARCHS: dict[str, type[nn.Module]] = {"edsr": EDSR, "rcan": RCAN, "carn": CARN, "carn-m": CARNM}

_FAMILIES = {
    "edsr": ("edsr", {"n_resblocks": 32, "n_feats": 256, "res_scale": 0.1}, "EDSR (paper): 32 blocks, 256 features"),
    "edsr-baseline": ("edsr", {"n_resblocks": 16, "n_feats": 64, "res_scale": 1.0}, "EDSR-baseline: 16 blocks, 64 features"),
    "rcan": ("rcan", {"n_resgroups": 10, "n_resblocks": 20, "n_feats": 64, "reduction": 16}, "RCAN: 10 groups x 20 RCAB"),
    "carn": ("carn", {}, "CARN: cascading residual network"),
    "carn-m": ("carn-m", {}, "CARN-M: mobile CARN, grouped convs"),
}


@dataclass(frozen=True)
class Preset:
    name: str
    arch: str
    config: dict
    description: str


PRESETS: dict[str, Preset] = {
    f"{fam}-x{s}": Preset(f"{fam}-x{s}", arch, {**cfg, "scale": s}, desc)
    for fam, (arch, cfg, desc) in _FAMILIES.items()
    for s in (2, 3, 4)
}


@dataclass(frozen=True)
class ModelDescriptor:
    """What a caller needs to know about a loaded model without reading its code."""

    arch: str
    scale: int
    scales: tuple[int, ...]
    config: dict
    in_channels: int = 3
    out_channels: int = 3
    supports_fp16: bool = True
    supports_bf16: bool = True
    # Receptive-field radius in LR pixels: tiles padded by this much reproduce whole-image output.
    receptive_radius: int = 0
    feature_taps: dict = field(default_factory=dict)


def _receptive_radius(model: nn.Module) -> int:
    """Sum of (k-1)/2 over the 3x3 convolutions on the longest path, in LR pixels (upper bound).

    RCAN's channel attention pools globally, so no finite radius is exact for it; tiling code
    treats -1 as "global context" and pads generously instead.
    """
    if getattr(model, "arch", "") == "rcan":
        return -1
    radius = 0
    for m in model.modules():
        if isinstance(m, nn.Conv2d) and m.kernel_size[0] > 1:
            radius += m.kernel_size[0] // 2
    return radius


def describe(model: nn.Module) -> ModelDescriptor:
    return ModelDescriptor(
        arch=model.arch,
        scale=model.scale,
        scales=tuple(model.scales),
        config=model.config(),
        receptive_radius=_receptive_radius(model),
        feature_taps=dict(model.feature_taps),
    )


def _coerce(value: str):
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def parse_spec(spec: str) -> tuple[str, dict]:
    """``preset`` or ``ARCH:key=value,...`` or ``preset:key=value`` -> (arch, config)."""
    name, _, rest = spec.partition(":")
    name = name.strip().lower()
    if name in PRESETS:
        arch, config = PRESETS[name].arch, dict(PRESETS[name].config)
    elif name in ARCHS:
        arch, config = name, {}
    else:
        known = ", ".join(sorted(PRESETS)) + "; architectures: " + ", ".join(ARCHS)
        raise SrkdError(f"unknown model '{spec}'. Presets: {known}")
    # Split on commas outside brackets so that list values such as scales=[2,3,4] survive.
    for item in filter(None, (p.strip() for p in re.split(r",(?![^\[]*\])", rest))):
        key, eq, value = item.partition("=")
        if not eq:
            raise SrkdError(f"bad model option '{item}' in '{spec}': expected key=value")
        config[key.strip()] = _coerce(value.strip())
    return arch, config


def build_model(arch: str, **config) -> nn.Module:
    """Instantiate an architecture from its config, rejecting unknown keys with a clear message."""
    if arch not in ARCHS:
        raise SrkdError(f"unknown architecture '{arch}' (known: {', '.join(ARCHS)})")
    cls = ARCHS[arch]
    allowed = set(inspect.signature(cls.__init__).parameters) - {"self"}
    unknown = set(config) - allowed
    if unknown:
        raise SrkdError(f"unknown option(s) {', '.join(sorted(unknown))} for {arch}; allowed: {', '.join(sorted(allowed))}")
    if "scales" in config and config["scales"] is not None:
        config["scales"] = tuple(config["scales"])
    if "rgb_mean" in config:
        config["rgb_mean"] = tuple(config["rgb_mean"])
    try:
        return cls(**config)
    except (ValueError, TypeError) as exc:
        raise SrkdError(f"invalid {arch} configuration: {exc}") from None


def build_from_spec(spec: str, **overrides) -> nn.Module:
    """Randomly initialised model from a preset name or custom spec (no weights are loaded)."""
    arch, config = parse_spec(spec)
    config.update({k: v for k, v in overrides.items() if v is not None})
    return build_model(arch, **config)
