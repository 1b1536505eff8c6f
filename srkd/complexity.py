"""Parameter and multiply-add counts (multiply-adds from ``torch.utils.flop_counter``)."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: nn.Module) -> int:
    """Trainable-architecture parameters; the frozen mean-shift convolutions are excluded."""
    return sum(p.numel() for n, p in model.named_parameters() if not n.startswith(("sub_mean", "add_mean")))


def count_macs(model: nn.Module, lr_size: tuple[int, int]) -> int:
    """Multiply-adds of one forward pass on a 1x3xHxW input (H, W = ``lr_size``).

    Counted on the meta device when the model lives there (no memory, no compute), otherwise on
    a real zero input. FLOPs reported by the counter are 2 per multiply-add.
    """
    device = next(model.parameters()).device
    x = torch.zeros(1, 3, lr_size[0], lr_size[1], device=device)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    return counter.get_total_flops() // 2
