"""SR architectures with official state-dict names, their specs and registries."""

from .carn import CARN, CARNM
from .edsr import EDSR
from .rcan import RCAN
from .registry import ARCHS, PRESETS, ModelDescriptor, build_from_spec, build_model, describe, parse_spec, spec_of
from .spec import ArchSpec

__all__ = ["ARCHS", "PRESETS", "ArchSpec", "CARN", "CARNM", "EDSR", "RCAN", "ModelDescriptor", "build_from_spec",
           "build_model", "describe", "parse_spec", "spec_of"]
