"""``fakd``: feature-affinity KD (He, Dai, Lu, Jiang, Xia; ICIP 2020).

For a feature F (B, C, H, W), F_hat is F with every spatial position's C-vector L2-normalised;
the spatial affinity A = F_hat^T F_hat is (B, HW, HW). The loss is the mean L1 between student
and teacher affinities at each tap, summed over taps, weight 10, plus the output terms
(1-alpha) L1(S, HR) + alpha L1(S, T) of the official code (``code/loss.py``, alpha = 0.5).

A is quadratic in HW: 48x48 patches give 2304^2 entries per sample and tap, ~5 GB for a batch
of 16 over three taps and two networks if materialised with its gradient. We compute the L1 over
square tiles of A under activation checkpointing, so at most one tile lives at a time and the
backward recomputes it; by symmetry only the tiles on and above the diagonal are computed. The
gradient still reaches the student (the copy of FAKD in the DUKD repository wraps the per-tap
losses in ``torch.tensor(...)`` and loses it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.utils.checkpoint import checkpoint

from .base import Distiller, Params, hp, l1

TAPS = ("body1", "body2", "body3")


def normalize_positions(feat: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, HW), each position's channel vector scaled to unit L2 norm."""
    f = feat.float().flatten(2)
    return f / (f.norm(dim=1, keepdim=True) + eps)


def spatial_affinity(feat: torch.Tensor) -> torch.Tensor:
    """Full (B, HW, HW) affinity; only for small maps and tests."""
    f = normalize_positions(feat)
    return f.transpose(1, 2) @ f


def _tile_l1_sum(fs: torch.Tensor, ft: torch.Tensor, r0: int, r1: int, c0: int, c1: int) -> torch.Tensor:
    a_s = fs[:, :, r0:r1].transpose(1, 2) @ fs[:, :, c0:c1]
    a_t = ft[:, :, r0:r1].transpose(1, 2) @ ft[:, :, c0:c1]
    return (a_s - a_t).abs().sum()


def affinity_l1(fs_feat: torch.Tensor, ft_feat: torch.Tensor, block_elems: int = 1 << 22) -> torch.Tensor:
    """mean |A_S - A_T| over (B, HW, HW) without holding either matrix in memory at once.

    A is symmetric, so only the tiles on and above the diagonal are computed (off-diagonal tiles
    count twice): half the work of the full matrix. Each tile holds at most ``block_elems``
    entries per network and is recomputed in the backward pass (checkpointing).
    """
    with torch.autocast(fs_feat.device.type, enabled=False):  # affinities in fp32, whatever the step runs in
        fs, ft = normalize_positions(fs_feat), normalize_positions(ft_feat).detach()
        b, _, n = fs.shape
        tile = max(1, math.isqrt(max(1, block_elems // b)))
        if tile >= n:
            return _tile_l1_sum(fs, ft, 0, n, 0, n) / (b * n * n)
        edges = list(range(0, n, tile)) + [n]
        total = fs.new_zeros(())
        for i in range(len(edges) - 1):
            for j in range(i, len(edges) - 1):
                args = (fs, ft, edges[i], edges[i + 1], edges[j], edges[j + 1])
                part = checkpoint(_tile_l1_sum, *args, use_reentrant=False) if fs.requires_grad else _tile_l1_sum(*args)
                total = total + (part if i == j else 2.0 * part)
        return total / (b * n * n)


@dataclass
class FAKDParams(Params):
    lambda_rec: float = hp(0.5, "weight of L1(S, HR): 1 - alpha, alpha = 0.5 in the official code", min=0.0)
    lambda_kd: float = hp(0.5, "weight of L1(S, T): alpha = 0.5 in the official code", min=0.0)
    lambda_fakd: float = hp(10.0, "weight of the affinity L1, summed over taps (official: 10*SA)", min=0.0)
    pixel_range: float = hp(
        255.0,
        "pixel L1 terms are measured on [0, pixel_range] images: 255 as in the official code "
        "(EDSR-PyTorch), which sets their balance against the scale-free affinity term; 1 = DUKD's balance",
        min=1e-6,
    )
    block_elems: int = hp(1 << 22, "affinity entries computed at once per network (memory bound, not a result)", min=1)
    taps: tuple[str, ...] = hp(TAPS, "feature taps: declared names, module paths, or student_path:teacher_path")


class FAKD(Distiller):
    name = "fakd"
    Params = FAKDParams
    summary = "feature-affinity KD: spatial affinity L1 at the body taps, weight 10 (+ output terms)"
    uses_features = True

    def loss_terms(self, lr, hr, s, t):
        p = self.params
        sa = sum(affinity_l1(fs, ft, p.block_elems) for fs, ft in zip(s.feats, t.feats))
        return {
            "rec": p.lambda_rec * p.pixel_range * l1(s.sr, hr),
            "kd": p.lambda_kd * p.pixel_range * l1(s.sr, t.sr),
            "fakd": p.lambda_fakd * sa,
        }
