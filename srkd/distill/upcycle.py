"""DUKD's composable pieces: data upcycling and label consistency (Zhang et al., arXiv 2309.14162).

*Upcycling* feeds the student in-domain inputs that have no ground truth, labelled by the teacher:

* **zoom-in**: tiles of the HR patch, each the size of an LR patch, used as LR inputs; the label
  is the teacher's output on the same tile (the HR patch itself is too small to be their HR);
* **zoom-out**: the LR patch downscaled once more by the scale with the MATLAB bicubic (the
  protocol's degradation); its HR label is the LR patch itself, plus the teacher's output.

*Label consistency* passes the zoom-in inputs through random invertible augmentations (colour
inversion ``1 - x``, flip of the rows, flip of the columns, transpose; each independently with
probability ``p`` per sample), runs the student, and maps its output back with the exact inverse
before comparing it with the teacher's label on the un-augmented tile.

The official code (``yun224/DUKD``, ``models/dukd_model.py``) "reverts" by applying the same
operations again in the same order. Every single operation is an involution, but transpose does
not commute with a flip (T.F_rows.T = F_cols), so a sample drawn with the transpose and exactly
one flip comes back rotated by 180 degrees: p * 2p(1-p) = 12.6 % of the zoom-in samples at
p = 0.3. :func:`revert` is the exact inverse (srkd's default); :func:`revert_official` keeps the
official behaviour for reproduction (``lc_revert=official``).

Any :class:`~srkd.distill.base.Distiller` whose hyper-parameters include
:class:`UpcycleParams` (and ``lambda_rec``/``lambda_kd``) gains these terms by putting
:class:`Upcycling` first among its bases: ``kd`` does, so ``--method kd --set upcycle=true`` is
"KD + DUKD" with no new code.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import SrkdError
from .base import Params, hp, l1

#: The augmentations in the order they are applied (the official order: i, h, v, t). ``flip_rows``
#: reverses the height axis (official ``'h'``: ``flip(dims=(-2,))``), ``flip_cols`` the width axis
#: (official ``'v'``: ``flip(dims=(-1,))``).
OPS = ("invert", "flip_rows", "flip_cols", "transpose")


# ----------------------------------------------------------------------------- augmentations


def draw_augmentations(n: int, p: float, device=None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Independent Bernoulli(p) draws, shape (n, 4) bool: column k switches ``OPS[k]`` on."""
    if not 0.0 <= p <= 1.0:
        raise SrkdError(f"augmentation probability must be in [0, 1], got {p}")
    return torch.rand(n, len(OPS), generator=generator, device=device) < p


def _check(x: torch.Tensor, draws: torch.Tensor) -> None:
    if x.dim() != 4 or draws.shape != (x.shape[0], len(OPS)) or draws.dtype != torch.bool:
        raise ValueError(f"expected an NCHW batch and ({x.shape[0] if x.dim() else '?'}, 4) bool draws, "
                         f"got {tuple(x.shape)} and {tuple(draws.shape)} {draws.dtype}")
    if bool(draws[:, 3].any()) and x.shape[-1] != x.shape[-2]:
        raise SrkdError(f"the transpose augmentation needs square inputs, got {x.shape[-2]}x{x.shape[-1]}; "
                        "use square patches or lc_prob=0")


def _where(mask: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    # Per-sample selection without in-place indexing: keeps autograd simple and handles the
    # case where no sample (or every sample) draws an operation.
    return torch.where(mask.view(-1, 1, 1, 1), a, b)


def _invert(x, m):
    return _where(m, 1.0 - x, x)


def _flip_rows(x, m):
    return _where(m, x.flip(-2), x)


def _flip_cols(x, m):
    return _where(m, x.flip(-1), x)


def _transpose(x, m):
    if not bool(m.any()):
        return x  # non-square outputs are fine when nothing is transposed
    return _where(m, x.transpose(-2, -1), x)


def augment(x: torch.Tensor, draws: torch.Tensor) -> torch.Tensor:
    """Apply the drawn operations to each sample, in the order of :data:`OPS`."""
    _check(x, draws)
    x = _invert(x, draws[:, 0])
    x = _flip_rows(x, draws[:, 1])
    x = _flip_cols(x, draws[:, 2])
    return _transpose(x, draws[:, 3])


def revert(y: torch.Tensor, draws: torch.Tensor) -> torch.Tensor:
    """The exact inverse of :func:`augment`: the same involutions in the reverse order.

    Applied to a network's output, the geometric operations act on the upscaled image and the
    colour inversion is undone as ``1 - y`` (inputs and outputs are in [0, 1]).
    """
    _check(y, draws)
    y = _transpose(y, draws[:, 3])
    y = _flip_cols(y, draws[:, 2])
    y = _flip_rows(y, draws[:, 1])
    return _invert(y, draws[:, 0])


def revert_official(y: torch.Tensor, draws: torch.Tensor) -> torch.Tensor:
    """The official code's "revert": the operations re-applied in the forward order.

    Equals :func:`revert` except for samples with the transpose and exactly one flip, which
    come back rotated by 180 degrees.
    """
    return augment(y, draws)


def official_revert_error_rate(p: float) -> float:
    """Fraction of samples the official revert leaves rotated by 180 degrees: p * 2p(1-p)."""
    return p * 2.0 * p * (1.0 - p)


# ----------------------------------------------------------------------------- zoom-in / zoom-out


def zoom_in(
    hr: torch.Tensor, lr_size: tuple[int, int], scale: int, n: int, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """``n`` distinct tiles of the HR patch's ``scale x scale`` grid, each of LR-patch size.

    The same grid positions are used for every sample (as in the official code) and drawn
    without replacement. Returns the tiles concatenated along the batch, position-major (all
    samples of the first position, then the second ...), and the (row, column) grid positions.
    """
    h, w = int(lr_size[0]), int(lr_size[1])
    if tuple(hr.shape[-2:]) != (h * scale, w * scale):
        raise SrkdError(f"zoom-in needs an HR patch of {h * scale}x{w * scale} (LR {h}x{w} at x{scale}), "
                        f"got {hr.shape[-2]}x{hr.shape[-1]}")
    if not 1 <= n <= scale * scale:
        raise SrkdError(f"n_gt_sub must be between 1 and scale^2 = {scale * scale} at x{scale}, got {n}")
    order = torch.randperm(scale * scale, generator=generator)[:n].tolist()
    positions = [(k // scale, k % scale) for k in order]
    tiles = torch.cat([hr[..., i * h:(i + 1) * h, j * w:(j + 1) * w] for i, j in positions], 0)
    return tiles, positions


def zoom_out(lr: torch.Tensor, scale: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input, HR label): the LR patch downscaled by ``scale`` with the MATLAB bicubic, and the LR
    patch itself.

    An LR side that is not a multiple of the scale is cropped (bottom/right) first, the usual
    modcrop, so that the student's output and its label have the same size. The resize runs in
    float32 outside autocast: it is the protocol's degradation, not a learned layer.
    """
    from ..data.resize import imresize

    h, w = lr.shape[-2:]
    hc, wc = h - h % scale, w - w % scale
    if hc == 0 or wc == 0:
        raise SrkdError(f"zoom-out needs an LR patch of at least {scale}x{scale} at x{scale}, got {h}x{w}")
    label = lr[..., :hc, :wc]
    with torch.autocast(lr.device.type, enabled=False):
        small = imresize(label.float(), 1.0 / scale)
    return small, label


# ----------------------------------------------------------------------------- hyper-parameters


@dataclass
class UpcycleParams(Params):
    """DUKD options that any KD-like method can switch on (needs ``lambda_rec`` and ``lambda_kd``)."""

    upcycle: bool = hp(False, "DUKD data upcycling: add zoom-in HR tiles (and zoom-out) as inputs labelled by the teacher")
    n_gt_sub: int = hp(1, "zoom-in tiles per HR patch, drawn from its scale x scale grid (at most scale^2)", min=1)
    zoom_out: bool = hp(True, "with upcycle: also feed the LR patch downscaled by the scale, labelled by the LR patch and the teacher")
    label_consistency: bool = hp(False, "with upcycle: random invertible augmentations on the zoom-in inputs, student output mapped back")
    lc_prob: float = hp(0.3, "probability of each augmentation (invert, flip rows, flip columns, transpose) per sample", min=0.0, max=1.0)
    lc_revert: str = hp("exact", "how the student's output is mapped back: exact inverse, or the official code's order "
                        "(leaves 2p^2(1-p) of samples rotated 180 degrees)", choices=("exact", "official"))
    lambda_upcycle: float = hp(1.0, "extra weight of all upcycled terms (the paper's lambda_dukd; 1 in the official code)", min=0.0)
    two_step: bool = hp(False, "official code: a second optimiser step per batch for the upcycled terms")
    carry_grad: bool = hp(True, "with two_step: the second step also applies the first step's gradient (official: no zero_grad between)")


def check_upcycle_params(p) -> None:
    if p.label_consistency and not p.upcycle:
        raise SrkdError("label_consistency augments DUKD's zoom-in inputs; also set upcycle=true")
    if p.two_step and not p.upcycle:
        raise SrkdError("two_step puts the upcycled terms in a second optimiser step; also set upcycle=true")


def upcycled_terms(distiller, lr: torch.Tensor, hr: torch.Tensor, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """The upcycled loss terms of one batch, already weighted.

    ``zoom_in``:      lambda_up * lambda_kd  * L1(revert(S(aug(tiles))), T(tiles))
    ``zoom_out_rec``: lambda_up * lambda_rec * L1(S(down(lr)), lr)
    ``zoom_out_kd``:  lambda_up * lambda_kd  * L1(S(down(lr)), T(down(lr)))

    The teacher runs without gradients (``distiller.run_teacher``); only the student's forward
    passes build a graph.
    """
    p = distiller.params
    scale = int(distiller.student.scale)
    w = p.lambda_upcycle
    terms: dict[str, torch.Tensor] = {}

    tiles, _ = zoom_in(hr, lr.shape[-2:], scale, p.n_gt_sub, generator)
    label = distiller.run_teacher(tiles).sr
    if p.label_consistency and p.lc_prob > 0 and tiles.shape[-1] != tiles.shape[-2]:
        # fail on the first batch, not on whichever batch first draws a transpose
        raise SrkdError(f"label consistency transposes its inputs and needs square patches, got LR "
                        f"{tiles.shape[-2]}x{tiles.shape[-1]}; use square patches or label_consistency=false")
    if p.label_consistency:
        draws = draw_augmentations(tiles.shape[0], p.lc_prob, tiles.device, generator)
        back = revert if p.lc_revert == "exact" else revert_official
        out = back(distiller.run_student(augment(tiles, draws)).sr, draws)
    else:
        out = distiller.run_student(tiles).sr
    terms["zoom_in"] = w * p.lambda_kd * l1(out, label)

    if p.zoom_out:
        small, lr_label = zoom_out(lr, scale)
        out = distiller.run_student(small).sr
        terms["zoom_out_rec"] = w * p.lambda_rec * l1(out, lr_label)
        terms["zoom_out_kd"] = w * p.lambda_kd * l1(out, distiller.run_teacher(small).sr)
    return terms


class Upcycling:
    """Mixin adding the upcycled terms to a Distiller's ordinary terms.

    Put it first among the bases (``class KD(Upcycling, Distiller)``). With ``two_step`` the
    engine makes two optimiser steps per batch: ``forward(lr, hr, phase=0)`` returns the
    method's ordinary terms, ``phase=1`` the upcycled ones; ``carry_grad`` tells the engine
    not to clear the gradient between them (the official behaviour).
    """

    def setup(self) -> None:
        check_upcycle_params(self.params)
        scale = int(getattr(self.student, "scale", 1))
        if self.params.upcycle and self.params.n_gt_sub > scale * scale:
            raise SrkdError(f"n_gt_sub must be between 1 and scale^2 = {scale * scale} at x{scale}, "
                            f"got {self.params.n_gt_sub}")
        super().setup()

    @property
    def steps_per_batch(self) -> int:
        return 2 if self.params.upcycle and self.params.two_step else 1

    @property
    def carry_grad(self) -> bool:
        return bool(self.params.carry_grad)

    def bind_engine(self, state) -> None:
        if self.steps_per_batch > 1 and self.carry_grad and getattr(state, "precision", "") == "fp16":
            # GradScaler unscales the carried gradient in place at the first step; adding the
            # second step's scaled gradient to it would mix two scales.
            raise SrkdError("two_step with carry_grad does not work with fp16 loss scaling; use --precision bf16 or fp32")
        parent = getattr(super(), "bind_engine", None)
        if parent is not None:
            parent(state)

    def forward(self, lr: torch.Tensor, hr: torch.Tensor, phase: int | None = None) -> dict[str, torch.Tensor]:
        terms: dict[str, torch.Tensor] = {}
        if phase in (None, 0):
            terms.update(super().forward(lr, hr))
        if self.params.upcycle and phase in (None, 1):
            terms.update(upcycled_terms(self, lr, hr))
        return terms
