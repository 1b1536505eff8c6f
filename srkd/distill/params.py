"""Typed hyper-parameters of a distillation method: ``hp(...)`` fields of a ``Params`` dataclass.

Values arrive as strings (``--set lambda_kd=0.5``) or native YAML values; :meth:`Params.replace`
converts them with srkd's one coercer (:mod:`srkd.values`) and checks choices and bounds.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any

from ..errors import SrkdError
from ..values import CoerceError, coerce


def hp(default, help: str, *, choices: tuple | None = None, min: float | None = None, max: float | None = None):
    """A hyper-parameter field: default, one-line help, optional choices and bounds."""
    meta = {"help": help, "choices": choices, "min": min, "max": max}
    if isinstance(default, (list, dict, set)):
        raise TypeError("use a tuple for sequence defaults")
    return field(default=default, metadata=meta)


@dataclass
class Params:
    """Base of every method's hyper-parameters. Subclasses are plain dataclasses of ``hp`` fields.

    Values arrive as strings (``--set lambda_kd=0.5``) or native YAML values; both go through
    :meth:`coerce`, which rejects unknown names and values of the wrong type or out of range.
    """

    @classmethod
    def field_specs(cls) -> list[tuple[str, Any, Any, dict]]:
        hints = typing.get_type_hints(cls)
        return [(f.name, hints[f.name], f.default, dict(f.metadata)) for f in dataclasses.fields(cls)]

    @classmethod
    def from_mapping(cls, values: dict | None, method: str = "") -> Params:
        params = cls()
        for key, value in (values or {}).items():
            params = params.replace(key, value, method)
        return params

    def replace(self, key: str, value, method: str = "") -> Params:
        specs = {name: (tp, meta) for name, tp, _, meta in self.field_specs()}
        label = f"method '{method}'" if method else "this method"
        if key not in specs:
            known = ", ".join(specs) or "none"
            raise SrkdError(f"unknown hyper-parameter '{key}' for {label} (known: {known})")
        tp, meta = specs[key]
        return dataclasses.replace(self, **{key: _coerce(key, value, tp, meta, label)})

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


def type_name(tp) -> str:
    if typing.get_origin(tp) is tuple:
        return "list of " + typing.get_args(tp)[0].__name__
    return getattr(tp, "__name__", str(tp))


def _coerce(key: str, value, tp, meta: dict, label: str):
    bad = f"bad value {value!r} for {key} ({label}): expected {type_name(tp)}"
    if typing.get_origin(tp) is not tuple and tp not in (bool, int, float, str):  # pragma: no cover - a declaration bug
        raise TypeError(f"unsupported hyper-parameter type {tp!r} for {key}")
    try:
        out = coerce(value, tp, key)
    except CoerceError as exc:
        raise SrkdError(bad + {"true or false": " (true/false)", "a finite number": " (finite)"}.get(exc.expected, "")) from None
    choices = meta.get("choices")
    if choices and out not in choices:
        raise SrkdError(f"bad value {value!r} for {key} ({label}): choose one of {', '.join(map(str, choices))}")
    lo, hi = meta.get("min"), meta.get("max")
    if lo is not None and out < lo:
        raise SrkdError(f"bad value {value!r} for {key} ({label}): must be >= {lo}")
    if hi is not None and out > hi:
        raise SrkdError(f"bad value {value!r} for {key} ({label}): must be <= {hi}")
    return out
