"""Values from YAML files and the command line, converted to the types srkd declares.

One coercer for every typed value: training configs (:mod:`srkd.train.config`) and method
hyper-parameters (:class:`srkd.distill.base.Params`) both call :func:`coerce`, and each words its
own error around the :class:`CoerceError` it raises. :func:`parse_literal` reads the untyped
values of a model spec (``edsr:n_feats=32,scales=[2,3,4]``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from typing import Any

_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")


class CoerceError(ValueError):
    """A value that is not of the declared type: ``value`` at ``where`` should have been ``expected``."""

    def __init__(self, expected: str, where: str | None = None, value: Any = None):
        super().__init__(expected)
        self.expected, self.where, self.value = expected, where, value


def _int(value: Any) -> int:
    if isinstance(value, bool):
        raise CoerceError("an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            f = float(value.strip())
        except ValueError:
            f = math.nan
        if f.is_integer():
            return int(f)
    raise CoerceError("an integer")


def _float(value: Any) -> float:
    if isinstance(value, bool):
        raise CoerceError("a number")
    try:
        out = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        raise CoerceError("a number") from None
    if not math.isfinite(out):
        raise CoerceError("a finite number")
    return out


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower() if isinstance(value, (str, int)) else None
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    raise CoerceError("true or false")


def _sequence(value: Any, inner, where: str, kind: type, build):
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, (list, tuple)):
        raise CoerceError("a list")
    items = [v for v in value if not (isinstance(v, str) and not v.strip())]  # "a,,b" and trailing commas
    return kind(coerce(v, inner, f"{where}[{i}]", build) for i, v in enumerate(items))


def coerce(value: Any, typ, where: str = "", build=None) -> Any:
    """``value`` as ``typ``: bool, int, float, str, ``X | None``, ``list[X]``, ``tuple[X, ...]``,
    ``dict`` or a dataclass (``build(cls, value, where)`` makes it). Raises :class:`CoerceError`.

    Strings are what the command line gives: ``"0.5"`` is a float, ``"3"`` and ``"3.0"`` an int,
    ``"a,b"`` a list, ``"none"`` None for optional values; strings are stripped.
    """
    try:
        return _coerce(value, typ, where, build)
    except CoerceError as exc:
        if exc.where is None:  # raised for this value, not for an item of it
            exc.where, exc.value = where, value
        raise


def _coerce(value: Any, typ, where: str, build) -> Any:
    origin, args = typing.get_origin(typ), typing.get_args(typ)
    if typ is Any:
        return value
    if type(None) in args:  # X | None
        if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null", "")):
            return None
        return coerce(value, next(a for a in args if a is not type(None)), where, build)
    if origin is list:
        return _sequence(value, args[0], where, list, build)
    if origin is tuple:
        return _sequence(value, args[0], where, tuple, build)
    if origin is dict:
        if not isinstance(value, dict):
            raise CoerceError("a mapping of name: value")
        return dict(value)
    if typ is bool:
        return _bool(value)
    if typ is int:
        return _int(value)
    if typ is float:
        return _float(value)
    if typ is str:
        if value is None or isinstance(value, (dict, list, tuple, bool)):
            raise CoerceError("a string")
        return str(value).strip()
    if dataclasses.is_dataclass(typ) and build is not None:
        return build(typ, value, where)
    raise TypeError(f"unsupported type {typ!r} at {where or 'a value'}")  # a declaration srkd does not parse: a bug


def parse_literal(text: str):
    """An untyped value as written in a model spec: JSON (``32``, ``0.5``, ``[2,3,4]``, ``true``), else the text."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text
