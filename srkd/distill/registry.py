"""The methods by name: ``METHODS``, :func:`get_method` and :func:`build_distiller`."""

from __future__ import annotations

from torch import nn

from ..errors import SrkdError
from .at import AT
from .csd import CSD
from .dckd import DCKD
from .base import Distiller
from .dukd import DUKD
from .facd import FACD
from .fakd import FAKD
from .fitnet import FitNet
from .kd import KD
from .scratch import Scratch

METHODS: dict[str, type[Distiller]] = {
    "scratch": Scratch,
    "kd": KD,
    "fitnet": FitNet,
    "at": AT,
    "fakd": FAKD,
    "facd": FACD,
    "csd": CSD,
    "dukd": DUKD,
    "dckd": DCKD,
}


def get_method(name: str) -> type[Distiller]:
    key = name.strip().lower()
    if key not in METHODS:
        raise SrkdError(f"unknown distillation method '{name}' (known: {', '.join(METHODS)}); see srkd distill --list-methods")
    return METHODS[key]


def build_distiller(
    method: str,
    student: nn.Module,
    teacher: nn.Module | None,
    params: dict | None = None,
    teacher_precision: str = "auto",
) -> Distiller:
    """Instantiate a method by name with hyper-parameters given by name (strings or native values)."""
    cls = get_method(method)
    return cls(student, teacher if cls.uses_teacher else None, cls.Params.from_mapping(params, cls.name), teacher_precision)
