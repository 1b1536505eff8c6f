"""srkd: train, distill, compress, evaluate and run single-image super-resolution networks.

The Python API, one call per command (each is a module you can also call)::

    srkd.distill("fakd", steps=500, out="runs/fakd")      # srkd distill
    srkd.train("edsr-baseline", scale=4, data=["T91"])     # srkd teacher-train
    srkd.evaluate("student.safetensors", ["set5"])         # srkd eval
    srkd.upscale(image, "edsr-baseline-x4")                # srkd upscale (numpy or PIL)
    srkd.compress("teacher.safetensors", 0.25, "s.safetensors")   # srkd compress

Each is imported on first use (importing srkd alone does not import torch).
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_API = ("distill", "train", "evaluate", "upscale", "compress")


def __getattr__(name: str):
    if name in _API:
        return importlib.import_module(f".{name}", __name__)  # a callable module (srkd._callable)
    raise AttributeError(f"module 'srkd' has no attribute '{name}'")


__all__ = ["__version__", *_API]
