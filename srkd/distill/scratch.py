"""``scratch``: the student trained alone with L1 to HR, the baseline every KD paper reports."""

from __future__ import annotations

from dataclasses import dataclass

from .base import Distiller, Params, hp, l1


@dataclass
class ScratchParams(Params):
    lambda_rec: float = hp(1.0, "weight of L1(student, HR)", min=0.0)


class Scratch(Distiller):
    name = "scratch"
    Params = ScratchParams
    summary = "no teacher: L1(S, HR) only (the baseline of every KD table)"
    uses_teacher = False

    def loss_terms(self, lr, hr, s, t):
        return {"rec": self.params.lambda_rec * l1(s.sr, hr)}
