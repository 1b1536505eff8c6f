"""The engine's contract with a training method, as a base class with no-op defaults.

A *method* is an ``nn.Module`` whose ``forward(lr, hr)`` returns a dict of named, already weighted
loss tensors; the engine sums them, steps the optimiser and logs each term. Everything else the
engine needs from a method is here, with the default the engine uses when a method does not
care. The engine calls these directly: no method is probed with ``hasattr``.

* :meth:`trainable_modules`: the student under ``"student"``, plus any adapters (trained with it,
  never exported); :meth:`frozen_modules`: networks moved to the device and kept in eval mode,
  never in the optimiser or the checkpoint.
* :meth:`bind_engine`: the live :class:`~srkd.train.state.EngineState` (step, EMA model, device).
* :meth:`on_step_start` / :meth:`on_step_end`: around the i-th optimiser step (i counts from 0).
* :attr:`steps_per_batch` and :attr:`carry_grad`: several optimiser steps per batch
  (``forward(lr, hr, phase=k)`` gives step k's terms; ``carry_grad`` keeps step k's gradient in
  step k+1, as DUKD's official loop does).
* :meth:`eval_model`: the network validation scores; :meth:`export_model` the one written to
  ``model.safetensors``, and :meth:`extra_exports` any model files written beside it. They are
  returned, and the engine writes every file.
* :meth:`extra_state` / :meth:`load_extra_state`: non-trained state that must survive a resume.
* :meth:`log_values`: extra scalars logged each step; :meth:`describe`: provenance for the export.
"""

from __future__ import annotations

from typing import Callable, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import SrkdError


class Method(nn.Module):
    """Base of every training method (:class:`Supervised`, :class:`~srkd.distill.base.Distiller`)."""

    # The student network *is* the teacher's (CSD): the CLI builds it from the teacher's config.
    shares_teacher: ClassVar[bool] = False

    @property
    def steps_per_batch(self) -> int:
        return 1

    @property
    def carry_grad(self) -> bool:
        return False

    def trainable_modules(self) -> dict[str, nn.Module]:
        raise NotImplementedError  # every method names its student (abstract, not a stub)

    def frozen_modules(self) -> dict[str, nn.Module]:
        return {}

    def bind_engine(self, state) -> None:
        """Receive the live engine state; the default keeps nothing."""

    def on_step_start(self, step: int) -> None:
        """Called before optimiser step ``step`` (0-based)."""

    def on_step_end(self, step: int) -> None:
        """Called after optimiser step ``step`` (0-based) and the EMA update."""

    def log_values(self) -> dict[str, float]:
        return {}

    def extra_state(self) -> dict:
        return {}

    def load_extra_state(self, state: dict) -> None:
        """Restore what :meth:`extra_state` returned; the default has nothing to restore."""

    def eval_model(self, model: nn.Module) -> nn.Module:
        """The network that validation scores, given the trained (EMA) student."""
        return model

    def export_model(self, model: nn.Module) -> nn.Module:
        """The network written to ``model.safetensors``, given the trained (EMA) student."""
        return model

    def extra_exports(self, model: nn.Module) -> dict[str, tuple[nn.Module, dict]]:
        """Model files written beside the export: file name -> (network, provenance additions)."""
        return {}

    def describe(self) -> dict:
        """Provenance for the export; empty: the engine records the configured method name."""
        return {}


def pixel_loss(kind: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    if kind == "l1":
        return lambda a, b: F.l1_loss(a.float(), b.float())
    if kind == "l2":
        return lambda a, b: F.mse_loss(a.float(), b.float())
    if kind == "charbonnier":
        return lambda a, b: torch.sqrt((a.float() - b.float()) ** 2 + 1e-6).mean()
    raise SrkdError(f"unknown pixel loss '{kind}' (use l1, l2 or charbonnier)")


class Supervised(Method):
    """Plain supervised training (``teacher-train``, the ``scratch`` baseline): loss(S(LR), HR)."""

    def __init__(self, student: nn.Module, loss: str = "l1"):
        super().__init__()
        self.student = student
        self.loss_kind = loss
        self._loss = pixel_loss(loss)

    def forward(self, lr: torch.Tensor, hr: torch.Tensor) -> dict[str, torch.Tensor]:
        return {self.loss_kind: self._loss(self.student(lr), hr)}

    def trainable_modules(self) -> dict[str, nn.Module]:
        return {"student": self.student}

    def describe(self) -> dict:
        return {"method": "scratch", "params": {"loss": self.loss_kind}}
