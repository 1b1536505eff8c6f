"""Receptive-field tracing: one small fp32 forward pass tells the tiler what a model needs.

The radius is measured on the convolutions the model actually runs (shared blocks count once
per use, each conv weighted by the resolution it runs at); global pools are found so that tiles
can be synchronised (:mod:`srkd.infer.poolsync`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import SrkdError


@dataclass
class ModelTrace:
    """What one small forward pass reveals about a model."""

    scale: int
    receptive_radius: float  # LR px, upper bound over every path (sum over executed convs)
    floats_per_px: float  # peak working set estimate, in floats per LR input pixel
    global_pools: list = field(default_factory=list)  # modules that pool over the whole image
    output: torch.Tensor | None = field(default=None, repr=False)  # the fp32 output of the traced input


_GLOBAL_POOL_TYPES = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


def _is_global_pool(m: nn.Module) -> bool:
    if not isinstance(m, _GLOBAL_POOL_TYPES):
        return False
    size = m.output_size
    size = (size, size) if isinstance(size, int) or size is None else tuple(size)
    return all(s == 1 for s in size)


def trace_model(model: nn.Module, device: torch.device, size: int = 16, x: torch.Tensor | None = None) -> ModelTrace:
    """Run ``model`` once (fp32) on ``x`` or a random ``size``x``size`` input; record convs, pools, activations.

    Convolutions are recorded per *call*, so a block applied three times (CARN-M's shared unit)
    counts three times, and each is weighted by the resolution it runs at (a 3x3 conv after a x2
    pixel shuffle reaches 0.5 LR px).
    """
    radius = 0.0
    sizes: list[int] = []
    pools: list[nn.Module] = []
    seen_pools: set[int] = set()

    def hook(module, inputs, output):
        nonlocal radius
        x = inputs[0] if inputs else None
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.MaxPool2d, nn.AvgPool2d)) and x is not None and x.dim() == 4:
            k = module.kernel_size if isinstance(module.kernel_size, tuple) else (module.kernel_size,) * 2
            d = getattr(module, "dilation", 1)
            d = d if isinstance(d, tuple) else (d, d)
            reach = max((k[0] - 1) // 2 * d[0], (k[1] - 1) // 2 * d[1])
            radius += reach * size / x.shape[-2]
        if _is_global_pool(module) and id(module) not in seen_pools:
            seen_pools.add(id(module))
            pools.append(module)
        in_place = isinstance(x, torch.Tensor) and isinstance(output, torch.Tensor) and output.data_ptr() == x.data_ptr()
        if isinstance(output, torch.Tensor) and not list(module.children()) and not in_place:
            sizes.append(output.numel())

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    try:
        x = torch.rand(1, 3, size, size) if x is None else x
        size = x.shape[-1]
        if x.shape[-2] != size:
            raise ValueError("trace_model needs a square input")
        with torch.no_grad():
            y = model(x.to(device))
    finally:
        for h in handles:
            h.remove()
    if y.dim() != 4 or y.shape[1] != 3 or y.shape[-1] % size or y.shape[-2] != y.shape[-1]:
        raise SrkdError(f"the model maps a 3x{size}x{size} input to {tuple(y.shape)}: not an RGB super-resolution model")
    scale = y.shape[-1] // size
    # In inference mode only a few activations are alive at once; the three largest (in-place
    # results not counted twice) bound the working set of feed-forward and concatenating (CARN)
    # networks alike.
    top = sorted(sizes, reverse=True)[:3]
    floats_per_px = (sum(top) + y.numel()) / (size * size)
    return ModelTrace(scale, radius, floats_per_px, pools, y.detach().float().cpu())
