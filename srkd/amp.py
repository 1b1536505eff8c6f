"""Mixed-precision helpers shared by training, distillation and inference.

One mechanism keeps the convolutions that read or write a 3-channel image in fp32 under
autocast: the student's and teacher's first and last layers, and the first layer of every frozen
encoder a loss compares images through (CSD's VGG-19, DCKD's VQGAN).
"""

from __future__ import annotations

import contextlib
import types

import torch
from torch import nn


def _fp32_forward(self: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    with torch.autocast(device_type=x.device.type, enabled=False):
        return self._conv_forward(x.float(), self.weight, self.bias)


@contextlib.contextmanager
def image_convs_fp32(model: nn.Module, enabled: bool):
    """Run the convolutions that read or write the 3-channel image outside autocast.

    bf16 keeps 8 significant bits: the mean shift and the last convolution would otherwise round
    the image to about one 8-bit level near white. They are a small share of the compute.
    """
    patched = []
    if enabled:
        for m in model.modules():
            if isinstance(m, nn.Conv2d) and (m.in_channels == 3 or m.out_channels == 3) and "forward" not in m.__dict__:
                m.forward = types.MethodType(_fp32_forward, m)
                patched.append(m)
    try:
        yield
    finally:
        for m in patched:
            del m.forward
