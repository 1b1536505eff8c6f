"""Exponential moving average of a model's weights and buffers (what validation and export use)."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """Exponential moving average of a model's parameters *and* buffers.

    The decay ramps up as ``min(decay, (1 + n) / (10 + n))`` over the first updates: with a
    constant 0.999 (BasicSR) the average of a short run is still mostly the random
    initialisation (0.999^300 = 0.74 after 300 steps); after a few thousand steps the ramp no
    longer matters. Integer buffers are copied.
    """

    def __init__(self, model: nn.Module, decay: float):
        self.decay = float(decay)
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        src = model.state_dict()
        floats_e, floats_s = [], []
        for k, e in self.module.state_dict().items():
            s = src[k].detach()
            if e.dtype.is_floating_point:
                floats_e.append(e)
                floats_s.append(s.to(e.dtype))
            else:
                e.copy_(s)
        if floats_e:
            torch._foreach_lerp_(floats_e, floats_s, 1.0 - d)

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "updates": self.updates, "decay": self.decay}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])
