"""What a network costs: parameters, multiply-adds (``torch.utils.flop_counter``) and measured time.

:func:`measure_seconds_many` is the one timing function: ``srkd compress`` and the comparison at the
end of ``srkd distill`` both use it, so their speed-ups are measured the same way.
"""

from __future__ import annotations

import copy
import time

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .errors import SrkdError


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


@torch.no_grad()
def measure_seconds_many(
    models: list[nn.Module],
    lr_size: tuple[int, int] = (64, 64),
    repeats: int = 3,
    precision: str = "fp32",
    device: str | torch.device = "cpu",
    warmup: int = 1,
) -> list[float]:
    """Best wall time of one forward of a 1x3xHxW input for each model (channels_last, autocast
    for bf16/fp16), the models timed in turn within every repeat.

    The minimum, as ``timeit`` recommends: other load on the machine only ever adds time; and
    interleaving exposes every model to the same load, so their ratio stays meaningful on a busy
    machine. The models are copied, never modified.
    """
    if precision not in ("fp32", "bf16", "fp16"):
        raise SrkdError(f"precision must be fp32, bf16 or fp16, got '{precision}'")
    if repeats < 1:
        raise SrkdError(f"repeats must be >= 1, got {repeats}")
    device = torch.device(device)
    layout = device.type in ("cpu", "cuda")
    nets = []
    for model in models:
        net = copy.deepcopy(model).to(device).eval()
        nets.append(net.to(memory_format=torch.channels_last) if layout else net)
    x = torch.rand(1, 3, *lr_size, device=device)
    if layout:
        x = x.contiguous(memory_format=torch.channels_last)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    best = [float("inf")] * len(nets)
    for i in range(warmup + repeats):
        for j, net in enumerate(nets):
            _sync(device)
            start = time.perf_counter()
            with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                net(x)
            _sync(device)
            if i >= warmup:
                best[j] = min(best[j], time.perf_counter() - start)
    return best


def measure_seconds(model: nn.Module, lr_size: tuple[int, int] = (64, 64), repeats: int = 3, precision: str = "fp32",
                    device: str | torch.device = "cpu", warmup: int = 1) -> float:
    """:func:`measure_seconds_many` for one model."""
    return measure_seconds_many([model], lr_size, repeats, precision, device, warmup)[0]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
