"""Modules you can call: ``srkd.upscale(...)``, ``srkd.evaluate(...)``, ``srkd.compress(...)``,
``srkd.distill(...)`` and ``srkd.train(...)`` are each the module of that name *and* its main
function, so that neither shadows the other (``from srkd.upscale import upscale_files`` and
``srkd.upscale(image)`` both work, whatever was imported first).
"""

from __future__ import annotations

import sys
import types


class CallableModule(types.ModuleType):
    """A module whose call is its ``__call_target__`` (set by :func:`make_callable`)."""

    def __call__(self, *args, **kwargs):
        return self.__call_target__(*args, **kwargs)


def make_callable(module_name: str, target) -> None:
    """Make ``sys.modules[module_name]`` callable as ``target`` (its docstring becomes the call's help)."""
    module = sys.modules[module_name]
    module.__class__ = CallableModule
    module.__call_target__ = target
