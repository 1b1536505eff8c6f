"""``fitnet``: feature regression (FitNets, Romero et al. 2015; "FD" in the SR KD papers).

Each tapped student feature goes through a trained regressor r_l (a 1x1 conv when the widths
differ) and is pulled towards the teacher feature at the same tap.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import nn

from .base import Distiller, Params, conv_adapter, hp, l1

TAPS = ("body1", "body2", "body3")


def feature_unit(model: nn.Module) -> float:
    """1 / rgb_range: expresses features in [0, 1]-image units whatever range the net works in.

    EDSR/RCAN multiply their input by 255 inside, CARN by 1, so raw features of the same image
    differ by 255x between families; dividing makes ``lambda_feat`` mean the same for all.
    """
    return 1.0 / float(getattr(model, "rgb_range", 1.0) or 1.0)


@dataclass
class FitNetParams(Params):
    lambda_rec: float = hp(1.0, "weight of L1(S, HR)", min=0.0)
    lambda_kd: float = hp(1.0, "weight of L1(S, T) (the output terms of the SR baselines)", min=0.0)
    lambda_feat: float = hp(1.0, "weight of the feature loss, summed over taps", min=0.0)
    distance: str = hp("l2", "feature distance: l2 = mean squared error (FitNets), l1", choices=("l2", "l1"))
    adapter: str = hp("auto", "regressor: auto = 1x1 conv when widths differ, else none", choices=("auto", "conv1x1", "conv3x3"))
    taps: tuple[str, ...] = hp(TAPS, "feature taps: declared names, module paths, or student_path:teacher_path")


class FitNet(Distiller):
    name = "fitnet"
    Params = FitNetParams
    summary = "feature regression through trained adapters at the body taps (+ output terms)"
    uses_features = True

    def build_adapters(self, s_ch, t_ch):
        kind = self.params.adapter
        for i, (cs, ct) in enumerate(zip(s_ch, t_ch)):
            if kind == "auto":
                self.adapters[str(i)] = conv_adapter(cs, ct, 1) if cs != ct else nn.Identity()
            else:
                self.adapters[str(i)] = conv_adapter(cs, ct, 1 if kind == "conv1x1" else 3)

    def loss_terms(self, lr, hr, s, t):
        p = self.params
        us, ut = feature_unit(self.student), feature_unit(self.teacher)
        dist = F.mse_loss if p.distance == "l2" else F.l1_loss
        feat = sum(
            dist(self.adapters[str(i)](fs).float() * us, ft.float() * ut) for i, (fs, ft) in enumerate(zip(s.feats, t.feats))
        )
        return {"rec": p.lambda_rec * l1(s.sr, hr), "kd": p.lambda_kd * l1(s.sr, t.sr), "feat": p.lambda_feat * feat}
