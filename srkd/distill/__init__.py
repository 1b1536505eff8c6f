"""Knowledge distillation for SR: the framework (:mod:`.base`) and one small class per method.

``METHODS`` maps a method name to its :class:`~srkd.distill.base.Distiller` subclass; a new
method is a new module here plus one line in :mod:`.registry`.
"""

from __future__ import annotations

from .base import Distiller, Outputs, Params, TapPair, method_doc
from .registry import (  # noqa: F401 - the method classes, importable from here as before
    AT, CSD, DCKD, DUKD, FACD, FAKD, KD, METHODS, FitNet, Scratch, build_distiller, get_method,
)

__all__ = ["METHODS", "Distiller", "Outputs", "Params", "TapPair", "build_distiller", "get_method", "method_doc"]


def distill(*args, **kwargs):
    """``srkd.distill(method, ...)``: see :func:`srkd.distill.run.distill`."""
    from .run import distill as run

    return run(*args, **kwargs)


from .._callable import make_callable  # noqa: E402

make_callable(__name__, distill)
