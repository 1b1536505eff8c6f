"""``kd``: output ("logits") distillation, L1 to HR plus lambda * L1 to the teacher's SR image."""

from __future__ import annotations

from dataclasses import dataclass

from .base import Distiller, Params, hp, l1
from .upcycle import UpcycleParams, Upcycling


@dataclass
class KDWeights(Params):
    lambda_rec: float = hp(1.0, "weight of L1(S, HR)", min=0.0)
    lambda_kd: float = hp(1.0, "weight of L1(S, T): 1 in DUKD and DCKD", min=0.0)


@dataclass
class KDParams(UpcycleParams, KDWeights):
    """The KD weights, then DUKD's upcycling options (off by default: ``upcycle=true`` is KD + DUKD)."""


class KD(Upcycling, Distiller):
    name = "kd"
    Params = KDParams
    summary = "output distillation: L1(S, HR) + lambda_kd * L1(S, T)"

    def loss_terms(self, lr, hr, s, t):
        p = self.params
        return {"rec": p.lambda_rec * l1(s.sr, hr), "kd": p.lambda_kd * l1(s.sr, t.sr)}
