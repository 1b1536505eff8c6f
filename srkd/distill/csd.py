"""``csd``: Contrastive Self-Distillation (Wang et al., IJCAI 2021; official code Booooooooooo/CSD).

One network, two widths. The student is the first ``floor(w*C)`` channels of the teacher with
shared weights (:mod:`srkd.compress.slim`); both widths are trained jointly::

    L = L1(S(x), HR) + lambda_t * L1(T(x), HR) + lambda_cl * L_CL          (L1 on [0, 255] pixels)
    L_CL = sum_j w_j * d(phi_j(S), sg(phi_j(T))) / (sum_k d(phi_j(S), sg(phi_j(N_k))) + 1e-7)

with phi_j the VGG-19 relu1_1..relu5_1 features, w = 1/32, 1/16, 1/8, 1/4, 1, d the mean
absolute difference over the whole batch (the ratio is taken after the batch mean, as in the
official code) and N_k bicubic-upsampled LR inputs of the batch. Our images are in [0, 1], so
the contrastive weight actually applied is ``lambda_cl / pixel_range`` (200 / 255 by default):
the same balance between the terms as in the official code. Teacher and negative features
carry no gradient; the teacher branch learns from its own L1 term only.

The engine trains the full-width network (its "student" slot holds the shared weights); what
is validated and exported is the width-``w`` sub-network as a plain model
(:func:`srkd.compress.extract_student`), and the shared network is saved beside it as
``model_shared.safetensors`` for ``srkd compress`` at other widths. Defaults and the two quirks
of the official code (``vgg_input``, ``negatives``) are discussed in ``docs/methods/csd.md``.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..precision import image_convs_fp32
from ..errors import SrkdError
from ..compress.slim import check_width, slim_config, slim_forward
from .base import Distiller, Params, hp, l1
from .vgg import load_vgg19, prepare_input

LAYER_WEIGHTS = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0)
EPS = 1e-7
SHARED_NAME = "model_shared.safetensors"


@dataclass
class CSDParams(Params):
    width: float = hp(0.25, "student width: fraction of the teacher's channels (official --stu_width_mult)", min=1e-6, max=1.0)
    lambda_t: float = hp(1.0, "weight of L1(T, HR) on the full-width branch (official --t_lambda)", min=0.0)
    lambda_cl: float = hp(200.0, "weight of the contrastive term relative to L1 on pixel_range pixels (official --contra_lambda)", min=0.0)
    pixel_range: float = hp(
        255.0,
        "pixel range lambda_cl is relative to: the official L1 is on [0, 255] pixels and the ratio is unitless, so "
        "the term added to our [0, 1] L1 is lambda_cl / pixel_range * L_CL (1 = relative to [0, 1] L1)",
        min=1e-6,
    )
    neg_num: int = hp(10, "negatives per anchor: bicubic-upsampled LR images of the batch (official --neg_num)", min=1)
    negatives: str = hp(
        "others",
        "others = for each anchor, K *other* images of the batch (paper); official = K images of the batch shared "
        "by every anchor, so an anchor's own image can be among its negatives (official code, issue #6)",
        choices=("others", "official"),
    )
    vgg_input: str = hp(
        "raw255",
        "VGG input: raw255 = image x 255 without normalisation (official code); imagenet = ImageNet mean/std",
        choices=("raw255", "imagenet"),
    )
    vgg_precision: str = hp(
        "amp",
        "VGG forward precision: the training precision (amp; its image-reading conv stays fp32) or always fp32 "
        "(the official code; bf16 moves the ratio by 2-7 %, benchmarks/encoder_precision.py)",
        choices=("amp", "fp32"),
    )
    vgg_weights: str = hp("hub", "hub (timm/vgg19.tv_in1k from the Hugging Face Hub), a file path, hf://..., or random (tests only)")
    layer_weights: tuple[str, ...] = hp(tuple(f"{w:g}" for w in LAYER_WEIGHTS), "weights of relu1_1..relu5_1 (official --vgg_weight)")


def bicubic_up(lr: torch.Tensor, scale: int) -> torch.Tensor:
    """Bicubic upsampling of LR inputs, as the official ``nn.Upsample(scale, mode='bicubic')``."""
    return F.interpolate(lr.float(), scale_factor=scale, mode="bicubic", align_corners=False)


def negative_plan(batch: int, neg_num: int, mode: str) -> tuple[torch.Tensor, int]:
    """Which bicubic images are negatives: (index tensor, K actually used).

    ``official``: a 1-D tensor of K batch indices (a random permutation's first K) shared by every
    anchor. ``others``: a (B, K) tensor whose row i lists K distinct images other than i (the
    batch rolled by 1..K; batches are already shuffled, so this pairs random images).
    """
    if mode == "official":
        k = min(neg_num, batch)
        return torch.randperm(batch)[:k], k
    if mode == "others":
        if batch < 2:
            raise SrkdError("csd needs at least 2 images per batch: the negatives are the other images of the batch")
        k = min(neg_num, batch - 1)
        rows = torch.arange(batch)
        return torch.stack([(rows - shift) % batch for shift in range(1, k + 1)], dim=1), k
    raise SrkdError(f"unknown negatives mode '{mode}' (use others or official)")


def contrastive_loss(
    fs: list[torch.Tensor],
    ft: list[torch.Tensor],
    fn: list[torch.Tensor],
    index: torch.Tensor,
    weights=LAYER_WEIGHTS,
) -> torch.Tensor:
    """CSD's ratio loss over feature layers.

    ``fs``/``ft``: student and teacher features (B, C, H, W) per layer; ``fn``: features of the
    negative images per layer; ``index`` as returned by :func:`negative_plan` (1-D: rows of
    ``fn`` shared by every anchor; 2-D (B, K): row ``index[i, k]`` of ``fn`` for anchor i).
    Teacher and negative features are detached here whatever the caller passed.
    """
    total = fs[0].new_zeros((), dtype=torch.float32)
    for w, s, t, n in zip(weights, fs, ft, fn):
        s, t, n = s.float(), t.detach().float(), n.detach().float()
        d_pos = (s - t).abs().mean()
        if index.dim() == 1:
            d_neg = sum((s - n[j].unsqueeze(0)).abs().mean() for j in index.tolist())
        else:
            d_neg = sum((s - n.index_select(0, index[:, k].to(n.device))).abs().mean() for k in range(index.shape[1]))
        total = total + float(w) * d_pos / (d_neg + EPS)
    return total


class CSD(Distiller):
    """Joint training of a network and its channel slice with the contrastive ratio loss.

    ``student`` is the network the engine trains: it must have the teacher's architecture and
    configuration (``--student`` may be omitted for csd) and starts from the teacher's weights.
    ``teacher`` is only read at construction; it is not kept.
    """

    name = "csd"
    Params = CSDParams
    summary = "contrastive self-distillation: a channel slice of the teacher, trained jointly with it (shared weights)"
    trains_teacher = True
    shares_teacher = True  # the student network *is* the teacher (the CLI builds it from the teacher's config)

    def __init__(self, student: nn.Module, teacher: nn.Module | None = None, params=None, teacher_precision: str = "auto"):
        super().__init__(student, teacher, params, teacher_precision)
        t_cfg, s_cfg = self.teacher.config(), student.config()
        if t_cfg != s_cfg or self.teacher.arch != student.arch:
            raise SrkdError(
                f"csd trains the teacher and its slice as one network, so the student must be the teacher's own "
                f"architecture: omit --student (teacher is {self.teacher.arch} {t_cfg}, student is {student.arch} {s_cfg})"
            )
        with torch.no_grad():
            student.load_state_dict(self.teacher.state_dict(), strict=True)
        # The width-1 branch is the student network itself; the loaded teacher is no longer needed.
        self.teacher = None

    def setup(self) -> None:
        p = self.params
        self.width = check_width(p.width)
        self.student_config = slim_config(self.student, self.width)  # refuses unsplittable models and bad widths
        try:
            self.layer_weights = tuple(float(v) for v in p.layer_weights)
        except ValueError:
            raise SrkdError(f"layer_weights must be 5 numbers, got {','.join(p.layer_weights)}") from None
        if len(self.layer_weights) != 5:
            raise SrkdError(f"layer_weights must be 5 numbers (relu1_1..relu5_1), got {len(self.layer_weights)}")
        self.vgg = load_vgg19(p.vgg_weights) if p.lambda_cl > 0 else None
        self._last: dict[str, float] = {}
        self._warned = False

    # -- the step ------------------------------------------------------------------------------

    def forward(self, lr: torch.Tensor, hr: torch.Tensor) -> dict[str, torch.Tensor]:
        p = self.params
        sr_t = self.student(lr)
        sr_s = slim_forward(self.student, lr, self.width)
        terms = {"rec": l1(sr_s, hr), "teacher": p.lambda_t * l1(sr_t, hr)}
        if self.vgg is not None:
            terms["contrast"] = (p.lambda_cl / p.pixel_range) * self.contrast(lr, sr_s, sr_t)
        return terms

    def contrast(self, lr: torch.Tensor, sr_s: torch.Tensor, sr_t: torch.Tensor) -> torch.Tensor:
        p = self.params
        index, k = negative_plan(lr.shape[0], p.neg_num, p.negatives)
        if k < p.neg_num and not self._warned:
            self._warned = True
            warnings.warn(f"csd: a batch of {lr.shape[0]} gives {k} negatives per anchor instead of neg_num={p.neg_num}",
                          stacklevel=2)
        scale = int(self.student.scale)
        # VGG's first convolution reads the SR images: in bf16 it would round them to about 1/256,
        # the size of the student-teacher differences the ratio measures (the same guard as DCKD's
        # VQGAN; benchmarks/encoder_precision.py measures the effect).
        device = lr.device.type
        amp = torch.is_autocast_enabled(device) and p.vgg_precision == "amp"
        off = contextlib.nullcontext() if amp or not torch.is_autocast_enabled(device) else torch.autocast(device, enabled=False)
        cast = (lambda x: x) if amp else (lambda x: x.float())
        with off, image_convs_fp32(self.vgg, amp):
            with torch.no_grad():
                neg_src = lr[index] if index.dim() == 1 else lr
                neg_img = bicubic_up(neg_src, scale)
                ft = self.vgg(prepare_input(cast(sr_t.detach()), p.vgg_input))
                fn = self.vgg(prepare_input(cast(neg_img.to(sr_t.dtype)), p.vgg_input))
            fs = self.vgg(prepare_input(cast(sr_s), p.vgg_input))
        local = torch.arange(k) if index.dim() == 1 else index
        loss = contrastive_loss(fs, ft, fn, local, self.layer_weights)
        self._last = {"contrast_ratio": float(loss.detach()), "negatives": float(k)}
        return loss

    def log_values(self) -> dict[str, float]:
        return dict(self._last)

    # -- engine interface ----------------------------------------------------------------------

    def trainable_modules(self) -> dict[str, nn.Module]:
        return {"student": self.student}

    def frozen_modules(self) -> dict[str, nn.Module]:
        return {"vgg": self.vgg} if self.vgg is not None else {}

    @torch.no_grad()
    def eval_model(self, model: nn.Module) -> nn.Module:
        """What validation scores: the width-``w`` sub-network of the (EMA) shared model."""
        from ..compress import extract_student

        return extract_student(model, self.width).to(next(model.parameters()).device)

    @torch.no_grad()
    def export_model(self, model: nn.Module) -> nn.Module:
        """The exported model: the plain student."""
        from ..compress import extract_student

        return extract_student(model, self.width)

    def extra_exports(self, model: nn.Module) -> dict[str, tuple[nn.Module, dict]]:
        """The shared network, written beside the student."""
        return {SHARED_NAME: (model, {"slim_width": self.width})}

    def describe(self) -> dict:
        d = super().describe()
        d["student_config"] = self.student_config
        d["shared_model"] = SHARED_NAME
        d["vgg"] = getattr(self.vgg, "source", None)
        return d
