"""Architecture and preset registries (plain dicts) and the model descriptor.

A *preset* is a named architecture configuration (``edsr-x4``); a *custom* configuration is
written ``ARCH:key=value,...`` (``edsr:n_feats=64,n_resblocks=32,res_scale=0.1,scale=4``).
Every fact about an architecture lives in its spec (:mod:`srkd.models.spec`), in its model file.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass, field

from torch import nn

from ..errors import SrkdError
from ..values import parse_literal
from . import carn, edsr, imdn, rcan, rfdn, rlfn, span, swinir
from .spec import ArchSpec

#: every architecture, by name: its spec (adding one is one line here)
ARCHS: dict[str, ArchSpec] = {s.name: s for s in (
    edsr.SPEC, rcan.SPEC, carn.SPEC, carn.SPEC_M, imdn.SPEC, rfdn.SPEC, rlfn.SPEC, span.SPEC, swinir.SPEC,
)}


@dataclass(frozen=True)
class Preset:
    name: str
    arch: str
    config: dict
    description: str


PRESETS: dict[str, Preset] = {
    name: Preset(name, spec.name, config, desc)
    for spec in ARCHS.values()
    for name, (config, desc) in spec.presets.items()
}


@dataclass(frozen=True)
class ModelDescriptor:
    """What a caller needs to know about a loaded model without reading its code.

    It is the one object callers use to learn an architecture's facts; ``spec`` holds the rest
    (formats, slicing, weights).
    """

    arch: str
    scale: int
    scales: tuple[int, ...]
    config: dict
    in_channels: int = 3
    out_channels: int = 3
    supports_fp16: bool = True
    supports_bf16: bool = True
    # Receptive-field radius in LR pixels: tiles padded by this much reproduce whole-image output;
    # -1 means global context (RCAN's pooling), where tiling pads generously instead.
    receptive_radius: int = 0
    feature_taps: dict = field(default_factory=dict)
    upsampler_prefixes: tuple[str, ...] = ()
    splittable: bool = False
    pad_multiple: int = 1
    min_tile_pad: int = 0
    min_input: int = 1
    spec: ArchSpec | None = field(default=None, repr=False, compare=False)


def spec_of(arch_or_model) -> ArchSpec:
    """The spec of an architecture name or a model, or an SrkdError naming the known ones."""
    name = arch_or_model if isinstance(arch_or_model, str) else getattr(arch_or_model, "arch", type(arch_or_model).__name__)
    spec = ARCHS.get(str(name).lower())
    if spec is None:
        raise SrkdError(f"unknown architecture '{name}' (known: {', '.join(ARCHS)})")
    return spec


def _receptive_radius(model: nn.Module, spec: ArchSpec) -> int:
    """Sum of (k-1)/2 over the convolutions with k > 1, in LR pixels (an upper bound); -1 for
    architectures with global context."""
    if spec.context == "global":
        return -1
    return sum(m.kernel_size[0] // 2 for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size[0] > 1)


def describe(model: nn.Module) -> ModelDescriptor:
    spec = spec_of(model)
    return ModelDescriptor(
        arch=model.arch,
        scale=model.scale,
        scales=tuple(model.scales),
        config=model.config(),
        supports_fp16=spec.supports_fp16,
        supports_bf16=spec.bf16_ok(),
        receptive_radius=_receptive_radius(model, spec),
        feature_taps=dict(model.feature_taps),
        upsampler_prefixes=spec.upsampler,
        splittable=spec.slicing is not None,
        pad_multiple=int(spec.pad_multiple(model) if callable(spec.pad_multiple) else spec.pad_multiple),
        min_tile_pad=spec.min_tile_pad,
        min_input=spec.min_input,
        spec=spec,
    )


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
        config[key.strip()] = parse_literal(value.strip())
    return arch, config


def build_model(arch: str, **config) -> nn.Module:
    """Instantiate an architecture from its config, rejecting unknown keys with a clear message."""
    cls = spec_of(arch).cls
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
