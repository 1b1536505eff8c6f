"""Compression by channel splitting: cut the width-``w`` sub-network out of a model.

:func:`extract_student` turns any EDSR, RCAN, CARN or CARN-M model (a CSD-trained two-branch
model or an ordinary checkpoint) into a standalone plain model of the same architecture with
``floor(w*C)`` features: no slimmable code is needed to load or run it, its tensors keep the
official key names, and its output equals the slimmable forward at ``w``
(:mod:`srkd.slim` defines the slicing). :func:`init_from_teacher_slice` loads such a slice into
an existing same-family student (``srkd distill --init teacher-slice``, the baseline of CSD
issue #9). :func:`compression_report` measures what the compression buys: parameters,
multiply-adds, inference time and benchmark PSNR of both widths.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from ..complexity import count_macs, count_params, measure_seconds_many
from ..errors import SrkdError
from ..models.registry import build_model
from .slim import check_width, slim_config, slim_state_dict

# ----------------------------------------------------------------------------- extraction


@torch.no_grad()
def extract_student(model: nn.Module, width: float) -> nn.Module:
    """The width-``width`` sub-network of ``model`` as a plain model (float32, CPU, eval mode).

    Every head of a multi-scale CARN is extracted; the active scale is kept. Width 1 returns a
    copy of the model itself.
    """
    width = check_width(width)
    config = slim_config(model, width)
    student = build_model(model.arch, **config)
    state = {k: v.detach() for k, v in model.state_dict().items()}
    state.update({k: v.detach() for k, v in slim_state_dict(model, width).items()})
    student.load_state_dict({k: v.to("cpu", torch.float32).clone() for k, v in state.items()}, strict=True)
    return student.eval()


def teacher_slice_width(student: nn.Module, teacher: nn.Module) -> float:
    """The width at which ``teacher``'s slice has ``student``'s shape, or an SrkdError saying why none does."""
    if getattr(student, "arch", None) != getattr(teacher, "arch", None):
        raise SrkdError(
            f"--init teacher-slice needs a student of the teacher's family: teacher is {teacher.arch}, "
            f"student is {student.arch}"
        )
    s_cfg, t_cfg = student.config(), teacher.config()
    width = s_cfg["n_feats"] / t_cfg["n_feats"]
    if width > 1:
        raise SrkdError(
            f"--init teacher-slice: the student has {s_cfg['n_feats']} features, more than the teacher's {t_cfg['n_feats']}"
        )
    return width


@torch.no_grad()
def init_from_teacher_slice(student: nn.Module, teacher: nn.Module) -> dict:
    """Copy the teacher's first-channel slice into ``student`` (in place); returns a provenance dict.

    The student may be narrower than the teacher and may have a subset of a multi-scale
    teacher's heads; depth and every other setting must match the slice. A shallower student has
    no well-defined slice (which blocks would it take?), so that is refused rather than guessed.
    """
    width = teacher_slice_width(student, teacher)
    if int(student.scale) not in tuple(teacher.scales):
        raise SrkdError(f"--init teacher-slice: the teacher has no x{student.scale} head (heads: x{', x'.join(map(str, teacher.scales))})")
    missing = set(student.scales) - set(teacher.scales)
    if missing:
        raise SrkdError(f"--init teacher-slice: the teacher has no head for x{', x'.join(map(str, sorted(missing)))}")
    expected = slim_config(teacher, width)
    got = student.config()
    ignore = ("scale", "scales")
    diff = {k: (got.get(k), v) for k, v in expected.items() if k not in ignore and _norm(got.get(k)) != _norm(v)}
    if diff:
        detail = ", ".join(f"{k}: student {a} vs slice {b}" for k, (a, b) in sorted(diff.items()))
        spec = ",".join(f"{k}={json.dumps(_norm(v), separators=(',', ':'))}" for k, v in expected.items()
                        if k not in ("rgb_mean", "rgb_range", "scales", "scale"))
        raise SrkdError(
            f"--init teacher-slice: the student is not the teacher's {width:g}-width slice ({detail}); "
            f"use a student such as {teacher.arch}:{spec}"
        )
    sliced = extract_student(teacher, width).state_dict()
    state = {}
    for key in student.state_dict():
        src = key
        if key.startswith("upsample.up."):
            # a single-scale CARN names its head "up", a multi-scale one "up<scale>"
            src = f"upsample.up{student.scale}." + key[len("upsample.up."):]
            if src not in sliced:
                src = key
        if src not in sliced:
            raise SrkdError(f"--init teacher-slice: the teacher has no tensor for the student's '{key}'")
        state[key] = sliced[src]
    student.load_state_dict(state, strict=True)
    return {"init": "teacher-slice", "width": width}


def _norm(v):
    return list(v) if isinstance(v, tuple) else v


def model_spec(model: nn.Module, with_scale: bool = False) -> str:
    """``arch:key=value,...`` that rebuilds ``model``'s architecture (its full configuration).

    Every setting is written out: the training engine reads a bare family name at a scale as
    the preset of that name (``edsr`` at x4 is the 32-block, 256-feature EDSR), so nothing may
    be left to defaults.
    """
    items = [f"{key}={json.dumps(_norm(value), separators=(',', ':'))}" for key, value in model.config().items()
             if with_scale or key != "scale"]
    return model.arch + ":" + ",".join(items)


# ----------------------------------------------------------------------------- measurement


def _meta_copy(model: nn.Module) -> nn.Module:
    with torch.device("meta"):
        net = build_model(model.arch, **model.config())
    return net


def macs_of(model: nn.Module, lr_size: tuple[int, int]) -> int:
    """Multiply-adds of one forward at ``lr_size``, counted on the meta device (no compute)."""
    return count_macs(_meta_copy(model), lr_size)


@dataclass
class WidthReport:
    """One width of a compression report."""

    width: float
    n_feats: int
    params: int
    macs: int
    seconds: float | None = None
    psnr: dict = field(default_factory=dict)
    ssim: dict = field(default_factory=dict)


@dataclass
class CompressionReport:
    arch: str
    scale: int
    lr_size: tuple[int, int]
    precision: str
    device: str
    teacher: WidthReport
    student: WidthReport

    @property
    def compression(self) -> float:
        return self.teacher.params / self.student.params

    @property
    def mac_ratio(self) -> float:
        return self.teacher.macs / self.student.macs

    @property
    def speedup(self) -> float | None:
        if self.teacher.seconds is None or self.student.seconds is None:
            return None
        return self.teacher.seconds / self.student.seconds

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(compression=self.compression, mac_ratio=self.mac_ratio, speedup=self.speedup)
        return d


def compression_report(
    teacher: nn.Module,
    student: nn.Module,
    width: float,
    lr_size: tuple[int, int] = (64, 64),
    repeats: int = 3,
    precision: str = "fp32",
    device: str = "cpu",
    datasets: tuple[str, ...] = ("set5",),
    data_root=None,
    eval_precision: str = "fp32",
    progress: bool = True,
) -> CompressionReport:
    """Parameters, multiply-adds, forward time at ``lr_size`` and PSNR/SSIM on ``datasets`` of both models.

    ``repeats=0`` skips timing; an empty ``datasets`` skips the benchmark evaluation.
    """
    from ..precision import resolve_device

    dev = resolve_device(device)
    rows = [WidthReport(w, int(net.n_feats), count_params(net), macs_of(net, lr_size))
            for net, w in ((teacher, 1.0), (student, width))]
    if repeats > 0:
        for row, sec in zip(rows, measure_seconds_many([teacher, student], lr_size, repeats, precision, dev)):
            row.seconds = sec
    if datasets:
        from ..evaluate import evaluate

        for row, net in zip(rows, (teacher, student)):
            for r in evaluate(net, list(datasets), data_root=data_root, device=str(dev), precision=eval_precision,
                              progress=progress):
                row.psnr[r.label], row.ssim[r.label] = r.psnr, r.ssim
    return CompressionReport(teacher.arch, int(teacher.scale), tuple(lr_size), precision, str(dev), rows[0], rows[1])


def width_from_provenance(metadata: dict) -> float | None:
    """The student width a CSD run recorded in its shared model's provenance (``slim_width``), if any.

    Only the shared two-width network carries it; the exported student (already cut) does not,
    so compressing that one again needs an explicit ``--width``.
    """
    try:
        prov = json.loads(metadata.get("provenance", "{}"))
    except json.JSONDecodeError:
        return None
    width = prov.get("slim_width") if isinstance(prov, dict) else None
    return float(width) if isinstance(width, (int, float)) and not isinstance(width, bool) else None
