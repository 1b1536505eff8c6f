"""Parameter and multiply-add counts (multiply-adds from ``torch.utils.flop_counter``)."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: nn.Module) -> int:
    """Parameters of the network as deployed: the frozen mean-shift convolutions are excluded, and
    so are the training-only branches of re-parameterised blocks (a module lists them in
    ``train_only``: SPAN's Conv3XC trains ``sk`` and ``conv`` and runs their fusion ``eval_conv``),
    the count the papers and the NTIRE challenges report."""
    skip = tuple(f"{name}.{branch}." if name else f"{branch}." for name, m in model.named_modules()
                 for branch in getattr(m, "train_only", ()))
    return sum(p.numel() for n, p in model.named_parameters()
               if not n.startswith(("sub_mean", "add_mean")) and not n.startswith(skip))


def count_macs(model: nn.Module, lr_size: tuple[int, int]) -> int:
    """Multiply-adds of one forward pass on a 1x3xHxW input (H, W = ``lr_size``).

    Counted on the meta device when the model lives there (no memory, no compute), otherwise on
    a real zero input. FLOPs reported by the counter are 2 per multiply-add.
    """
    device = next(model.parameters()).device
    x = torch.zeros(1, 3, lr_size[0], lr_size[1], device=device)
    training = model.training
    model.eval()  # the inference graph: re-parameterised blocks run fused
    try:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(x)
    finally:
        model.train(training)
    return counter.get_total_flops() // 2
