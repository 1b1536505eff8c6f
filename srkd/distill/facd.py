"""``facd``: feature-domain adaptive contrastive distillation (Moon, Jeong, Kim; arXiv 2211.15951,
IEEE Access 2023). No official code exists; what is the paper's and what is ours is listed in
``docs/methods/facd.md``. In short:

* paper (abstract, framework figure): three taps in the residual body of both networks; student
  features pass a learned "DR" block, teacher features are used directly; a contrastive loss with
  the student feature as anchor, the teacher feature of the same patch as positive and features
  of other patches as negatives replaces the Euclidean feature loss; SR losses tie S to T and GT;
  distillation is applied per training patch depending on a condition.
* ours (each one a hyper-parameter below): DR = 1x1 conv C_s -> C_t; L1 distances; the ratio
  d_pos / mean_k d_neg per patch (CSD/DCKD form, no temperature); negatives = the teacher
  features of the other patches of the batch; condition = the teacher's SR patch is closer to HR
  than the student's (L1), applied to every teacher-dependent term.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import SrkdError
from .base import Distiller, Params, conv_adapter, hp, l1, masked_mean, per_sample_l1

TAPS = ("body1", "body2", "body3")
EPS = 1e-7  # CSD's and DCKD's guard on the negative distance


def _pairwise(anchor: torch.Tensor, pool: torch.Tensor, distance: str) -> torch.Tensor:
    """(B, B) mean distances d(anchor_i, pool_k) over all feature entries.

    ``cdist`` computes the B^2 L1 distances without materialising the B x B x CHW differences
    (neither forward nor backward); squared L2 uses the Gram expansion.
    """
    a, p = anchor.flatten(1), pool.flatten(1)
    n = a.shape[1]
    if distance == "l1":
        return torch.cdist(a.unsqueeze(0), p.unsqueeze(0), p=1).squeeze(0) / n
    sq = a.pow(2).sum(1, keepdim=True) + p.pow(2).sum(1).unsqueeze(0) - 2.0 * a @ p.T
    return sq.clamp_min(0.0) / n


def negative_weights(b: int, k: int, device=None) -> torch.Tensor:
    """(B, B) averaging weights: row i puts 1/k on patches i-1, ..., i-k (mod B), never on i."""
    idx = torch.arange(b, device=device)
    w = torch.zeros(b, b, device=device)
    for shift in range(1, k + 1):
        w[idx, (idx - shift) % b] = 1.0 / k
    return w


def contrastive_ratio(anchor: torch.Tensor, positive: torch.Tensor, num_negatives: int = 0, distance: str = "l1") -> torch.Tensor:
    """Per-patch d(anchor_i, positive_i) / mean_k d(anchor_i, positive_k), k != i. Shape (B,).

    ``num_negatives`` = 0 uses all B-1 other patches, otherwise patches i-1 ... i-k of the batch.
    """
    b = anchor.shape[0]
    if b < 2:
        raise SrkdError("facd needs a batch of at least 2 patches: the negatives are the other patches of the batch")
    k = b - 1 if num_negatives <= 0 else min(num_negatives, b - 1)
    with torch.autocast(anchor.device.type, enabled=False):  # distances in fp32 whatever the step runs in
        a, p = anchor.float(), positive.float().detach()
        diff = a - p
        d_pos = (diff.abs() if distance == "l1" else diff.pow(2)).flatten(1).mean(1)
        d_neg = (_pairwise(a, p, distance) * negative_weights(b, k, a.device)).sum(1)
        return d_pos / (d_neg + EPS)


@dataclass
class FACDParams(Params):
    lambda_rec: float = hp(1.0, "weight of L1(S, HR) (always on)", min=0.0)
    lambda_kd: float = hp(1.0, "weight of L1(S, T) per patch (masked by the adaptive condition)", min=0.0)
    lambda_facd: float = hp(0.1, "weight of the contrastive term, summed over taps [ours]", min=0.0)
    dr: str = hp("conv1x1", "DR block on the student side: 1x1 or 3x3 conv C_s -> C_t [ours]", choices=("conv1x1", "conv3x3"))
    distance: str = hp("l1", "feature distance inside the ratio [ours]", choices=("l1", "l2"))
    num_negatives: int = hp(0, "negatives per anchor from the other patches of the batch; 0 = all", min=0)
    adaptive: str = hp(
        "teacher_better",
        "per-patch condition: teacher_better = distil only where L1(T, HR) < L1(S, HR); off = always [ours]",
        choices=("teacher_better", "off"),
    )
    adaptive_terms: str = hp("all", "terms the condition gates: all teacher terms (kd + facd) or facd only", choices=("all", "facd"))
    taps: tuple[str, ...] = hp(TAPS, "feature taps: declared names, module paths, or student_path:teacher_path")


class FACD(Distiller):
    name = "facd"
    Params = FACDParams
    summary = "feature-domain contrastive distillation with a per-patch adaptive mask (reconstruction)"
    uses_features = True

    def build_adapters(self, s_ch, t_ch):
        kernel = 1 if self.params.dr == "conv1x1" else 3
        for i, (cs, ct) in enumerate(zip(s_ch, t_ch)):
            self.adapters[str(i)] = conv_adapter(cs, ct, kernel)
        self._last_rate = float("nan")

    def patch_mask(self, hr: torch.Tensor, s_sr: torch.Tensor, t_sr: torch.Tensor) -> torch.Tensor | None:
        """Boolean (B,) mask of the patches that are distilled, or None when adaptation is off."""
        if self.params.adaptive == "off":
            return None
        with torch.no_grad():
            return per_sample_l1(t_sr, hr) < per_sample_l1(s_sr.detach(), hr)

    def loss_terms(self, lr, hr, s, t):
        p = self.params
        mask = self.patch_mask(hr, s.sr, t.sr)
        self._last_rate = 1.0 if mask is None else float(mask.float().mean())
        contrast = sum(
            contrastive_ratio(self.adapters[str(i)](fs), ft, p.num_negatives, p.distance)
            for i, (fs, ft) in enumerate(zip(s.feats, t.feats))
        )
        kd_mask = mask if p.adaptive_terms == "all" else None
        return {
            "rec": p.lambda_rec * l1(s.sr, hr),
            "kd": p.lambda_kd * masked_mean(per_sample_l1(s.sr, t.sr), kd_mask),
            "facd": p.lambda_facd * masked_mean(contrast, mask),
        }

    def log_values(self):
        return {"distilled_frac": self._last_rate}
