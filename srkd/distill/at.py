"""``at``: attention transfer (Zagoruyko & Komodakis, ICLR 2017) at the body taps.

The attention map of a feature F (B, C, H, W) is a = sum_c F^2, L2-normalised over H*W per
sample, as in FAKD's ``feature_transformation.AT``. It is channel-agnostic, so teacher and
student may differ in width without an adapter.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .base import Distiller, Params, hp, l1

TAPS = ("body1", "body2", "body3")


def attention_map(feat: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """(B, C, H, W) -> (B, H*W): channel energy, unit L2 norm per sample."""
    a = feat.float().pow(2).sum(1).flatten(1)
    return a / (a.norm(dim=1, keepdim=True) + eps)


@dataclass
class ATParams(Params):
    lambda_rec: float = hp(1.0, "weight of L1(S, HR)", min=0.0)
    lambda_kd: float = hp(1.0, "weight of L1(S, T)", min=0.0)
    lambda_at: float = hp(10.0, "weight of the attention loss, summed over taps", min=0.0)
    distance: str = hp("l1", "l1 (FAKD's AT) or l2 (mean squared, the AT paper's form)", choices=("l1", "l2"))
    taps: tuple[str, ...] = hp(TAPS, "feature taps: declared names, module paths, or student_path:teacher_path")


class AT(Distiller):
    name = "at"
    Params = ATParams
    summary = "attention transfer: normalised channel energy maps matched at the body taps (+ output terms)"
    uses_features = True

    def loss_terms(self, lr, hr, s, t):
        p = self.params
        dist = F.l1_loss if p.distance == "l1" else F.mse_loss
        at = sum(dist(attention_map(fs), attention_map(ft)) for fs, ft in zip(s.feats, t.feats))
        return {"rec": p.lambda_rec * l1(s.sr, hr), "kd": p.lambda_kd * l1(s.sr, t.sr), "at": p.lambda_at * at}
