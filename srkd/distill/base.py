"""The distillation framework: a frozen teacher, a student, feature taps, adapters and loss terms.

A *method* is a small :class:`Distiller` subclass with a typed hyper-parameter dataclass
(:class:`Params`) and a :meth:`Distiller.loss_terms` that turns one batch into a dict of named,
already weighted loss terms. The training engine sums the terms, logs each one separately and
steps the optimiser over :meth:`Distiller.trainable_parameters` (the student and the method's
adapters). Everything else -- the teacher, frozen encoders -- stays in eval mode with
``requires_grad=False`` and is never written back.

Features are captured with forward hooks at module paths: the architectures' declared taps
(``model.feature_taps``: ``body1``, ``body2``, ``body3``) or any ``named_modules()`` path.
Hooks only record while a forward runs inside :meth:`Distiller.capture`, so evaluating the
student during training costs nothing extra.
"""

from __future__ import annotations

import contextlib
import dataclasses
import types
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import SrkdError
from ..precision import PRECISIONS, autocast
from ..train.method import Method
from .params import Params, hp, type_name  # noqa: F401 - every method declares its Params with these

# ----------------------------------------------------------------------------- small losses


def l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean absolute error in float32 (autocast may hand us bf16 tensors)."""
    return F.l1_loss(a.float(), b.float())


def per_sample_l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean absolute error of each sample, shape (B,)."""
    return (a.float() - b.float()).abs().flatten(1).mean(1)


def masked_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over the batch of ``mask * values``, normalised by the full batch size.

    Dividing by B (not by the number of active samples) keeps each patch's weight fixed, so a
    patch that is switched off removes exactly its own share and nothing is re-weighted.
    """
    if mask is None:
        return values.mean()
    # where() rather than a product: a masked patch then contributes exactly zero value and zero
    # gradient even if its own term were not finite.
    return torch.where(mask, values, torch.zeros_like(values)).sum() / values.shape[0]


# ----------------------------------------------------------------------------- feature capture


@dataclass(frozen=True)
class TapPair:
    """One distillation position: a module path in the student and one in the teacher."""

    name: str
    student: str
    teacher: str


def resolve_taps(specs: tuple[str, ...], student: nn.Module, teacher: nn.Module | None) -> list[TapPair]:
    """Turn tap specs into module paths.

    A spec is a declared tap name (``body2``), a module path used in both networks
    (``body.7``), or ``STUDENT_PATH:TEACHER_PATH`` (``body.5:body.21``).
    """
    pairs = []
    for spec in specs:
        if ":" in spec:
            s_path, _, t_path = spec.partition(":")
        else:
            s_path = t_path = spec
        s_path = _tap_path(student, s_path.strip(), "student")
        t_path = _tap_path(teacher, t_path.strip(), "teacher") if teacher is not None else t_path.strip()
        pairs.append(TapPair(spec, s_path, t_path))
    if not pairs:
        raise SrkdError("no feature taps given (taps=body1,body2,body3 or module paths)")
    return pairs


def _tap_path(model: nn.Module, name: str, role: str) -> str:
    declared = dict(getattr(model, "feature_taps", {}) or {})
    path = declared.get(name, name)
    try:
        model.get_submodule(path)
    except AttributeError:
        arch = getattr(model, "arch", type(model).__name__)
        hint = f"declared taps: {', '.join(f'{k}={v}' for k, v in declared.items())}" if declared else "no declared taps"
        raise SrkdError(
            f"the {role} ({arch}) has no module '{path}' to tap; {hint}; any path from named_modules() also works"
        ) from None
    return path


class FeatureRecorder:
    """Forward hooks that store module outputs while :attr:`active` is set."""

    def __init__(self, model: nn.Module, paths: list[str], clone: bool = False):
        self.paths = list(paths)
        self.active = False
        self.clone = clone
        self.outputs: dict[str, torch.Tensor] = {}
        self._handles = []
        for path in dict.fromkeys(self.paths):  # a path tapped twice needs one hook
            self._handles.append(model.get_submodule(path).register_forward_hook(self._hook(path)))

    def _hook(self, path: str):
        def record(module, inputs, output):
            if self.active:
                if not isinstance(output, torch.Tensor):
                    raise SrkdError(f"tapped module '{path}' returns {type(output).__name__}, not a feature tensor")
                # User-chosen modules may be followed by in-place ops (ReLU(inplace=True)) that
                # would silently change the recorded tensor; declared taps are block outputs.
                self.outputs[path] = output.clone() if self.clone else output

        return record

    @contextlib.contextmanager
    def recording(self):
        self.outputs = {}
        self.active = True
        try:
            yield self
        finally:
            self.active = False

    def features(self) -> list[torch.Tensor]:
        missing = [p for p in self.paths if p not in self.outputs]
        if missing:
            raise SrkdError(f"tapped module(s) {', '.join(missing)} did not run in the forward pass")
        return [self.outputs[p] for p in self.paths]

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


# ----------------------------------------------------------------------------- the framework


@dataclass
class Outputs:
    """A network's SR output and its tapped features (in tap order) for one batch."""

    sr: torch.Tensor
    feats: list[torch.Tensor] = field(default_factory=list)


class Distiller(Method):
    """Base of every method. Subclasses set the class attributes and implement :meth:`loss_terms`.

    Class attributes
    ----------------
    name: registry key (``kd``).
    Params: the hyper-parameter dataclass.
    summary: one line for ``--list-methods``.
    uses_teacher: False for methods that never run the teacher (``scratch``).
    uses_features: True when the method taps features (the Params then has a ``taps`` field).
    trains_teacher: True for methods that update the teacher (CSD); the teacher's parameters
        then join :meth:`trainable_parameters` and it follows ``train()``/``eval()``.
    """

    name: ClassVar[str] = ""
    Params: ClassVar[type[Params]] = Params
    summary: ClassVar[str] = ""
    uses_teacher: ClassVar[bool] = True
    uses_features: ClassVar[bool] = False
    trains_teacher: ClassVar[bool] = False

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None = None,
        params: Params | dict | None = None,
        teacher_precision: str = "auto",
    ):
        super().__init__()
        if params is None or isinstance(params, dict):
            params = self.Params.from_mapping(params, self.name)
        if not isinstance(params, self.Params):
            raise TypeError(f"{self.name} expects {self.Params.__name__}, got {type(params).__name__}")
        if teacher_precision not in PRECISIONS:
            raise SrkdError(f"teacher precision must be one of {', '.join(PRECISIONS)}, got '{teacher_precision}'")
        self.params = params
        self.teacher_precision = teacher_precision
        self.engine = None
        # Set by the caller that loaded the teacher; recorded in the exported student's provenance.
        self.teacher_info: dict = {}
        self.student = student
        self.adapters = nn.ModuleDict()
        self.taps: list[TapPair] = []
        self._student_rec: FeatureRecorder | None = None
        self._teacher_rec: FeatureRecorder | None = None
        if self.uses_teacher:
            if teacher is None:
                raise SrkdError(f"method '{self.name}' needs a teacher (--teacher)")
            check_compatible(student, teacher)
            self.teacher = teacher
            if not self.trains_teacher:
                self.teacher.requires_grad_(False)
                self.teacher.eval()
        else:
            self.teacher = None
        if self.uses_features:
            self.taps = resolve_taps(tuple(params.taps), student, teacher if self.uses_teacher else None)
            self._student_rec = FeatureRecorder(student, [t.student for t in self.taps], self._needs_clone(student, "student"))
            if self.uses_teacher:
                self._teacher_rec = FeatureRecorder(teacher, [t.teacher for t in self.taps], self._needs_clone(teacher, "teacher"))
            s_shapes, t_shapes = self.probe_features()
            self.check_feature_shapes(s_shapes, t_shapes)
            self.build_adapters([s[0] for s in s_shapes], [t[0] for t in t_shapes])
        self.setup()

    # -- subclass hooks ------------------------------------------------------------------------

    def setup(self) -> None:
        """Create extra modules (projection heads, history models) after taps are known."""

    def build_adapters(self, student_channels: list[int], teacher_channels: list[int]) -> None:
        """Create ``self.adapters`` from the tapped channel counts (default: none)."""

    def check_feature_shapes(self, s_shapes, t_shapes) -> None:
        """Default: tapped features must have the same spatial size in both networks."""
        for tap, s, t in zip(self.taps, s_shapes, t_shapes):
            if s[1:] != t[1:]:
                raise SrkdError(
                    f"feature tap '{tap.name}': student '{tap.student}' gives {s[1]}x{s[2]} but teacher "
                    f"'{tap.teacher}' gives {t[1]}x{t[2]} on the same input; choose taps with equal spatial size"
                )

    def loss_terms(self, lr: torch.Tensor, hr: torch.Tensor, s: Outputs, t: Outputs | None) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def on_step_start(self, step: int) -> None:
        """Called by the engine before each optimiser step (step counts from 0)."""

    def on_step_end(self, step: int) -> None:
        """Called by the engine after each optimiser step (EMA-like updates of extra models)."""

    def bind_engine(self, state) -> None:
        """The engine hands over its live state (step, EMA model, device, precision)."""
        self.engine = state

    def log_values(self) -> dict[str, float]:
        """Extra scalars of the last step worth logging (not losses), e.g. FACD's mask rate."""
        return {}

    # -- the step ------------------------------------------------------------------------------

    def forward(self, lr: torch.Tensor, hr: torch.Tensor) -> dict[str, torch.Tensor]:
        """One batch -> dict of named, weighted loss terms (the engine sums them)."""
        s = self.run_student(lr)
        t = self.run_teacher(lr) if self.uses_teacher else None
        terms = self.loss_terms(lr, hr, s, t)
        return {k: v for k, v in terms.items() if v is not None}

    def run_student(self, lr: torch.Tensor) -> Outputs:
        if self._student_rec is None:
            return Outputs(self.student(lr))
        with self._student_rec.recording() as rec:
            sr = self.student(lr)
            return Outputs(sr, rec.features())

    def run_teacher(self, lr: torch.Tensor) -> Outputs:
        """Teacher forward without gradients in the fastest precision; outputs in float32."""
        if self.trains_teacher:
            return self._teacher_forward(lr)
        from ..precision import resolve_precision
        from ..precision import image_convs_fp32

        precision = resolve_precision(self.teacher_precision, lr.device)
        # As for the student in the engine: the convolutions that read and write the image stay
        # in fp32, or bf16 would round the teacher's SR target to about one 8-bit level.
        with torch.no_grad(), autocast(lr.device, precision), image_convs_fp32(self.teacher, precision != "fp32"):
            out = self._teacher_forward(lr)
        return Outputs(out.sr.float(), [f.float() for f in out.feats])

    def _teacher_forward(self, lr: torch.Tensor) -> Outputs:
        if self._teacher_rec is None:
            return Outputs(self.teacher(lr))
        with self._teacher_rec.recording() as rec:
            sr = self.teacher(lr)
            return Outputs(sr, rec.features())

    # -- engine interface ----------------------------------------------------------------------

    def train(self, mode: bool = True) -> Distiller:
        super().train(mode)
        for module in self.frozen_modules().values():
            module.eval()  # frozen networks stay in eval mode whatever the engine asks
        return self

    def trainable_modules(self) -> dict[str, nn.Module]:
        """What the optimiser updates and the run checkpoint saves (besides optimiser state)."""
        mods = {"student": self.student}
        if len(self.adapters):
            mods["adapters"] = self.adapters
        if self.trains_teacher and self.teacher is not None:
            mods["teacher"] = self.teacher
        return mods

    def frozen_modules(self) -> dict[str, nn.Module]:
        """Networks used but never updated; kept in eval mode and out of the optimiser."""
        return {"teacher": self.teacher} if self.teacher is not None and not self.trains_teacher else {}

    def trainable_parameters(self) -> list[nn.Parameter]:
        seen, params = set(), []
        for module in self.trainable_modules().values():
            for p in module.parameters():
                if p.requires_grad and id(p) not in seen:
                    seen.add(id(p))
                    params.append(p)
        return params

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """State of the trainable modules only (no frozen teacher: it is reloaded from its file)."""
        return {f"{name}.{k}": v for name, m in self.trainable_modules().items() for k, v in m.state_dict().items()}

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for name, module in self.trainable_modules().items():
            prefix = f"{name}."
            sub = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            module.load_state_dict(sub, strict=True)

    def close(self) -> None:
        """Remove the hooks; the student is then exactly the bare network again."""
        for rec in (self._student_rec, self._teacher_rec):
            if rec is not None:
                rec.remove()
        self._student_rec = self._teacher_rec = None

    # -- helpers -------------------------------------------------------------------------------

    def _needs_clone(self, model: nn.Module, role: str) -> bool:
        declared = set(dict(getattr(model, "feature_taps", {}) or {}).values())
        paths = {t.student if role == "student" else t.teacher for t in self.taps}
        return not paths <= declared

    @torch.no_grad()
    def probe_features(self, size: int = 12) -> tuple[list[tuple[int, ...]], list[tuple[int, ...]]]:
        """(C, H, W) of every tap in both networks on a small input, before any training."""
        device = next(self.student.parameters()).device
        size = max(size, *(_min_input(m) for m in (self.student, self.teacher) if m is not None))
        x = torch.rand(1, 3, size, size, device=device)
        was_training = self.student.training
        self.student.eval()
        try:
            s_shapes = [tuple(f.shape[1:]) for f in self.run_student(x).feats]
        finally:
            self.student.train(was_training)
        if self.uses_teacher:
            t_shapes = [tuple(f.shape[1:]) for f in self._teacher_forward(x.to(next(self.teacher.parameters()).device)).feats]
        else:
            t_shapes = list(s_shapes)
        return s_shapes, t_shapes

    def describe(self) -> dict:
        """JSON-able provenance of the method: name, hyper-parameters and resolved taps."""
        d = {"method": self.name, "params": self.params.to_dict()}
        if self.uses_teacher:
            d["teacher_precision"] = self.teacher_precision
        if self.teacher_info:
            d["teacher"] = dict(self.teacher_info)
        if self.taps:
            d["taps"] = [dataclasses.asdict(t) for t in self.taps]
        return d


def conv_adapter(c_in: int, c_out: int, kernel: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2)


def check_compatible(student: nn.Module, teacher: nn.Module) -> None:
    s, t = getattr(student, "scale", None), getattr(teacher, "scale", None)
    if s is not None and t is not None and int(s) != int(t):
        raise SrkdError(
            f"teacher is x{t} but student is x{s}; distillation needs the same scale "
            f"(pick a x{t} student, e.g. edsr:n_resblocks=16,n_feats=32,scale={t})"
        )


def method_doc(cls: type[Distiller]) -> types.SimpleNamespace:
    """Name, summary and hyper-parameter table of a method (for ``--list-methods`` and docs)."""
    rows = []
    for name, tp, default, meta in cls.Params.field_specs():
        shown = ",".join(default) if isinstance(default, tuple) else default
        extra = f" [{'|'.join(map(str, meta['choices']))}]" if meta.get("choices") else ""
        rows.append((name, type_name(tp), shown, (meta.get("help") or "") + extra))
    return types.SimpleNamespace(name=cls.name, summary=cls.summary, params=rows)


def _min_input(model: nn.Module) -> int:
    """The smallest input side an srkd architecture accepts (1 for foreign modules)."""
    from ..models.registry import ARCHS

    spec = ARCHS.get(str(getattr(model, "arch", "")))
    return spec.min_input if spec is not None else 1
