"""Learning-rate schedules: a pure function of the step, so a resumed run needs no scheduler state."""

from __future__ import annotations

import math

from . import config as C


def lr_at(cfg: C.TrainConfig, step: int) -> float:
    """Learning rate used for optimiser step ``step`` (1-based)."""
    base, s, total = cfg.optim.lr, cfg.schedule, cfg.train.steps
    if s.warmup and step <= s.warmup:
        return base * step / s.warmup
    if s.kind == "constant":
        return base
    if s.kind == "multistep":
        passed = sum(1 for m in s.milestones if step > round(m * total))
        return base * s.gamma ** passed
    span = max(total - s.warmup, 1)
    t = min(max(step - s.warmup - 1, 0) / span, 1.0)
    return s.min_lr + (base - s.min_lr) * 0.5 * (1.0 + math.cos(math.pi * t))
