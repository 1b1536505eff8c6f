"""Warm start of a student from a checkpoint, also of another scale (``--init PATH``).

DUKD's x4 students start from its x2 students (``pretrain_network_g`` with
``strict_load_g: false`` in ``options/EDSR/dukd_edsr_x4*.yml``); EDSR-PyTorch starts x3/x4 from
x2 the same way. Everything but the upsampler is scale-independent, so it loads; the upsampler
(``ArchSpec.upsampler``: ``tail.*`` in EDSR/RCAN, ``upsample.*`` in CARN/CARN-M) keeps its fresh initialisation when the
scales differ, and the list of those tensors is reported.

Unlike BasicSR's ``strict=False``, which silently drops any tensor whose shape differs, every
non-upsampler tensor must match here: a width or depth mismatch is a wrong file, not a warm start.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from ..errors import SrkdError



@dataclass
class InitReport:
    source: str
    source_arch: str
    source_scales: tuple[int, ...]
    loaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # upsampler tensors left at their initialisation

    def summary(self) -> str:
        scales = "/".join(f"x{s}" for s in self.source_scales)
        line = f"init: loaded {len(self.loaded)} tensors from {self.source} ({self.source_arch} {scales})"
        if self.skipped:
            line += f"; kept the student's fresh upsampler ({len(self.skipped)} tensors: {', '.join(self.skipped)})"
        return line


def upsampler_prefixes(model: nn.Module) -> tuple[str, ...]:
    """State-dict prefixes of the scale-specific upsampler (declared in the architecture's spec)."""
    from ..models.registry import spec_of

    return spec_of(model).upsampler


def init_from_state(student: nn.Module, state: dict[str, torch.Tensor], source: str, source_arch: str,
                    source_scales: tuple[int, ...]) -> InitReport:
    """Copy ``state`` into ``student``: all tensors, or all but the upsampler when the scale differs."""
    arch = str(getattr(student, "arch", "")).lower()
    if source_arch.lower() != arch:
        raise SrkdError(f"--init {source} is a {source_arch} model but the student is {arch}; "
                        "a warm start needs the same architecture")
    prefixes = upsampler_prefixes(student)
    target = student.state_dict()
    scale = int(student.scale)
    head = f"upsample.up{scale}."
    if arch.startswith("carn") and any(k.startswith("upsample.up.") for k in target) and any(k.startswith(head) for k in state):
        # a multi-scale CARN file has a head for this scale: it is the single-scale upsampler
        state = {("upsample.up." + k[len(head):] if k.startswith(head) else k): v for k, v in state.items()
                 if not k.startswith("upsample.up") or k.startswith(head)}
    is_up = lambda k: k.startswith(prefixes)  # noqa: E731
    same_upsampler = {k: tuple(v.shape) for k, v in target.items() if is_up(k)} == {
        k: tuple(v.shape) for k, v in state.items() if is_up(k)}
    same_scale = scale in source_scales
    load_upsampler = same_scale and same_upsampler

    report = InitReport(source, source_arch, tuple(source_scales))
    body_t = {k for k in target if not is_up(k)}
    body_s = {k for k in state if not is_up(k)}
    missing, extra = sorted(body_t - body_s), sorted(body_s - body_t)
    if missing or extra:
        what = f"missing {', '.join(missing[:3])}" if missing else f"unexpected {', '.join(extra[:3])}"
        raise SrkdError(f"--init {source} does not fit the student ({what}); use a checkpoint of the same "
                        "architecture and depth")
    for k in sorted(body_t):
        if tuple(state[k].shape) != tuple(target[k].shape):
            raise SrkdError(f"--init {source} does not fit the student: {k} is {tuple(state[k].shape)} there, "
                            f"{tuple(target[k].shape)} in the student (another width?)")
    new = {}
    for k, v in target.items():
        if k in body_t or load_upsampler:
            new[k] = state[k].to(dtype=v.dtype)
            report.loaded.append(k)
        else:
            new[k] = v
            report.skipped.append(k)
    student.load_state_dict(new, strict=True)
    return report


def init_student(student: nn.Module, ref: str, log: Callable[[str], None] | None = print) -> InitReport:
    """Load the model file ``ref`` (path, preset or hf://) into ``student`` as a warm start.

    The source is built from its own header, so a x2 file starts a x4 student. The global RNG is
    left untouched (building the source network would otherwise consume it and shift the run's
    random stream relative to a run without ``--init``).
    """
    from ..io.hub import load_model

    with torch.random.fork_rng(devices=[]):
        mf = load_model(ref)
    src = mf.model
    report = init_from_state(student, src.state_dict(), str(ref), str(getattr(src, "arch", "?")),
                             tuple(int(s) for s in getattr(src, "scales", (src.scale,))))
    if log is not None:
        log(report.summary())
    return report
