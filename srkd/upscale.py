"""Upscale images: numpy arrays, PIL images and files (the library behind ``srkd upscale``).

``srkd.upscale(image, model=None, ...)`` upscales one image and returns the same kind of object:
a numpy array with the input's dtype and channel layout, or a PIL image (this module is
callable). :func:`upscale_files` runs a batch of files, folders and glob patterns
(:mod:`srkd.upscale_batch`); :func:`upscale_array` is the shared core
(:mod:`srkd.upscale_image`, which describes the image kinds).

This module imports torch lazily so that ``import srkd`` stays fast.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from typing import Callable

import numpy as np

from ._callable import make_callable
from .errors import SrkdError
from .upscale_batch import (  # noqa: F401 - the file API, importable from here as before
    EXT_CHOICES,
    READ_EXTS,
    WRITE_EXTS,
    BatchReport,
    Job,
    expand_inputs,
    plan_jobs,
    upscale_files,
)
from .upscale_image import ALPHA_MODES, _array_to_pil, _pil_to_array, fill_transparent, upscale_array  # noqa: F401


class UpscalerCache:
    """Upscalers built for model references, kept for repeated calls: bounded, least recently used
    out first. :func:`upscale` uses :data:`DEFAULT_CACHE` (one model) unless given its own."""

    def __init__(self, size: int = 1):
        if size < 1:
            raise SrkdError(f"an UpscalerCache holds at least one Upscaler, not {size}")
        self.size = int(size)
        self._items: OrderedDict = OrderedDict()

    def get(self, key, make: Callable[[], object]):
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        while len(self._items) >= self.size:  # make room first: two large models never coexist
            self._items.popitem(last=False)
        value = make()
        self._items[key] = value
        return value

    def clear(self) -> None:
        self._items.clear()

    def __len__(self) -> int:
        return len(self._items)


DEFAULT_CACHE = UpscalerCache(1)  # keep one model alive, not every model ever used


def _get_upscaler(model, scale, device, precision, tile, tile_pad, backend=None, cache: UpscalerCache | None = None):
    from torch import nn

    from .backends import default_backend
    from .infer import Upscaler

    backend = backend or default_backend()
    if isinstance(model, Upscaler):
        return model
    if model is None or isinstance(model, (str, os.PathLike)):
        key = (str(model) if model is not None else None, scale, str(device), precision, str(tile), tile_pad, backend)

        def make():
            from .io.hub import load_model

            net = load_model(None if model is None else str(model), scale=scale).model
            return Upscaler(net, device=device, precision=precision, tile=tile, tile_pad=tile_pad, backend=backend)

        return (cache if cache is not None else DEFAULT_CACHE).get(key, make)
    net = getattr(model, "model", model)  # a ModelFile
    if not isinstance(net, nn.Module):
        raise SrkdError(f"model must be a reference string, a ModelFile, an nn.Module or an Upscaler, not {type(model).__name__}")
    if scale is not None and scale != net.scale:
        if scale not in getattr(net, "scales", (net.scale,)):
            raise SrkdError(f"the model is x{net.scale}; it has no x{scale} head")
        import copy

        net = copy.deepcopy(net)
        net.set_scale(scale)
    return Upscaler(net, device=device, precision=precision, tile=tile, tile_pad=tile_pad, backend=backend)


def upscale(
    image,
    model=None,
    *,
    scale: int | None = None,
    outscale: float | None = None,
    device: str = "auto",
    precision: str = "auto",
    tile: int | str | None = "auto",
    tile_pad: int | None = None,
    alpha: str = "model",
    self_ensemble: bool = False,
    backend: str | None = None,
    cache: UpscalerCache | None = None,
):
    """Upscale one image (numpy array or PIL image); returns the same kind of object.

    ``model``: None (the bundled model), a reference string (path, preset, ``hf://...``), a
    ``ModelFile``, an ``nn.Module`` or an ``srkd.infer.Upscaler`` (reuse one for many images).
    Reference strings are loaded once and kept in ``cache`` (default :data:`DEFAULT_CACHE`, one
    model) for repeated calls with the same settings.
    ``backend`` None is ``$SRKD_BACKEND`` or ``auto`` (srkd.backends.default_backend).
    """
    upscaler = _get_upscaler(model, scale, device, precision, tile, tile_pad, backend, cache)
    if isinstance(image, np.ndarray):
        return upscale_array(image, upscaler, outscale=outscale, alpha=alpha, self_ensemble=self_ensemble)
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow is a dependency
        Image = None
    if Image is not None and isinstance(image, Image.Image):
        arr, mode = _pil_to_array(image)
        out = upscale_array(arr, upscaler, outscale=outscale, alpha=alpha, self_ensemble=self_ensemble)
        return _array_to_pil(out, mode)
    raise SrkdError(f"expected a numpy array or a PIL image, got {type(image).__name__}")


# ----------------------------------------------------------------------------------- files


make_callable(__name__, upscale)  # srkd.upscale(image) is upscale() above; the module stays importable
