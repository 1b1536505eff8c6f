"""SR architectures with official state-dict names, and their registries."""

from .carn import CARN, CARNM
from .edsr import EDSR
from .rcan import RCAN
from .registry import ARCHS, PRESETS, ModelDescriptor, build_from_spec, build_model, describe, parse_spec

__all__ = ["ARCHS", "PRESETS", "CARN", "CARNM", "EDSR", "RCAN", "ModelDescriptor", "build_from_spec",
           "build_model", "describe", "parse_spec"]
