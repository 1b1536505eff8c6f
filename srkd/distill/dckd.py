"""``dckd``: Dynamic Contrastive Knowledge Distillation (Zhou et al., AAAI 2025, arXiv 2412.08939;
official code ``super-SSS/DCKD``, ``basicsr/models/dckd_model.py``)::

    L = L1(S, HR) + L1(S, T) + lambda_dcl * L_dcl + lambda_ce * L_ce                (paper Eq. 10)

* **Dynamic contrastive regularisation** (L_dcl). Anchor: the student's SR output; positive:
  the teacher's; negatives: a *history* copy of the student super-resolving the LR input and
  degraded copies of it. Distances are L1 in five feature levels of a frozen VQGAN encoder
  (:mod:`srkd.distill.vqgan`)::

      L_dcl = sum_i w_i * mean|f_i(S) - f_i(T)| / (mean sum_j |f_i(S) - f_i(N_j)| + 1e-7)

  with w = 1/32, 1/16, 1/8, 1/4, 1. The history model follows the student's EMA,
  ``his <- alpha * his + (1 - alpha) * ema`` every s steps, s growing over training.
* **Distribution mapping** (L_ce). Each latent pixel's soft assignment to the VQGAN codebook,
  ``softmax_k(-||z - e_k||^2)``; cross-entropy of the student's assignment against the teacher's
  (paper Eq. 9). The released code passes the student's *probabilities* to
  ``F.cross_entropy`` as if they were logits; ``ce_variant=code`` reproduces that.
* **DCKD\\*** (the released config): ``lcr=true`` adds ``L1(S(x), revert(T(aug(x))))`` with the
  teacher on invertibly augmented inputs (DUKD's label consistency, as ``lcr_opt`` does);
  ``upcycle=true`` adds DUKD's upcycled inputs as for ``kd``.

Every deviation between paper and code, with the option that selects it, is listed in
``docs/methods/dckd.md``.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import SrkdError
from .base import hp, l1
from .degrade import Degradation, degrade, gaussian_blur, gaussian_noise, negative_inputs  # noqa: F401 - DCKD's negatives
from .kd import KD, KDParams

EPS = 1e-7  # the released ContrasLoss's guard on the negative distance
LEVEL_WEIGHTS = ("0.03125", "0.0625", "0.125", "0.25", "1")  # paper appendix; config cl_opt.weights
INTERVALS = ("1000", "2000", "3000")  # config train.step
BOUNDS = ("0.3333", "0.6667")  # the paper/issue: three thirds of training
CODE_BOUNDS = ("0.4", "0.8")  # the code's phases: iterations 1-100k, 100k-200k, 200k-250k of 250k
REFERENCE_STEPS = 250_000  # config total_iter


# ----------------------------------------------------------------------------- history model


def parse_floats(values, name: str, count: int | None = None, lo: float | None = None) -> tuple[float, ...]:
    try:
        out = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise SrkdError(f"{name} must be a comma-separated list of numbers, got {','.join(map(str, values))}") from None
    if count is not None and len(out) != count:
        raise SrkdError(f"{name} needs {count} values, got {len(out)}")
    if any(not math.isfinite(v) or (lo is not None and v < lo) for v in out):
        raise SrkdError(f"{name} values must be finite{f' and >= {lo}' if lo is not None else ''}, got {out}")
    return out


def history_interval(iteration: int, total: int, intervals=(1000, 2000, 3000), bounds=(0.4, 0.8),
                     reference: int = REFERENCE_STEPS) -> int:
    """Steps between history updates at 1-based ``iteration`` of a ``total``-step run.

    Phase k holds the iterations after ``round(bounds[k-1] * total)`` (the code's
    ``(iter - 1) // 100000``); its interval is ``intervals[k]`` scaled by ``total / reference``
    (``reference`` 0: not scaled), at least 1. At total = reference = 250k this is exactly the
    released schedule: every 1k steps up to 100k, 2k up to 200k, 3k after.
    """
    phase = sum(1 for b in bounds if iteration - 1 >= round(b * total))
    s = intervals[min(phase, len(intervals) - 1)]
    if reference > 0:
        s = s * total / reference
    return max(1, int(round(s)))


def history_update_iterations(total: int, **kw) -> list[int]:
    """The 1-based iterations after which the history model is updated."""
    return [it for it in range(1, total + 1) if it % history_interval(it, total, **kw) == 0]


@torch.no_grad()
def history_update_(history: nn.Module, source: nn.Module, alpha: float) -> None:
    """``theta_his <- alpha * theta_his + (1 - alpha) * theta_src`` on every floating tensor.

    Buffers follow the same rule (for SR networks they are constants such as the RGB mean, so
    this only matters for normalisation statistics); integer buffers are copied.
    """
    src = source.state_dict()
    for k, h in history.state_dict().items():
        s = src[k].detach()
        if h.dtype.is_floating_point:
            h.lerp_(s.to(h.dtype), 1.0 - alpha)
        else:
            h.copy_(s)


# ----------------------------------------------------------------------------- loss pieces


class _FixedL1(torch.autograd.Function):
    """Per-sample ``mean sum_j |a - n_j|`` whose value and (sub)gradient were accumulated one
    negative at a time, so the negatives' feature maps never have to be held together."""

    @staticmethod
    def forward(ctx, anchor, value, direction):
        ctx.save_for_backward(direction)
        return value.clone()

    @staticmethod
    def backward(ctx, grad):
        (direction,) = ctx.saved_tensors
        return direction * grad.view(-1, *([1] * (direction.dim() - 1))), None, None


class NegativeDistance:
    """Accumulates ``sum_j |a - n_j|`` per sample for one feature level."""

    def __init__(self, anchor: torch.Tensor):
        self.anchor = anchor
        self._a = anchor.detach().float()
        self.value = torch.zeros(anchor.shape[0], device=anchor.device)
        self.direction = torch.zeros_like(self._a)
        self.count = 0

    def add(self, negative: torch.Tensor) -> None:
        d = self._a - negative.detach().float()
        self.direction += d.sign()
        self.value += d.abs_().flatten(1).mean(1)
        self.count += 1

    def result(self) -> torch.Tensor:
        per_elem = self.direction / self.direction[0].numel()
        if self.anchor.requires_grad:
            return _FixedL1.apply(self.anchor, self.value, per_elem.to(self.anchor.dtype))
        return self.value


def contrastive_ratio(d_pos: torch.Tensor, d_neg: torch.Tensor, reduction: str = "batch") -> torch.Tensor:
    """``d_pos / (d_neg + eps)`` from per-sample distances.

    ``batch``: the ratio of the batch means (the released ``ContrasLoss``); ``sample``: the mean
    of per-sample ratios.
    """
    if reduction == "batch":
        return d_pos.mean() / (d_neg.mean() + EPS)
    return (d_pos / (d_neg + EPS)).mean()


def dcl_loss(anchor: list[torch.Tensor], positive: list[torch.Tensor], negatives: list[list[torch.Tensor]],
             weights, reduction: str = "batch") -> torch.Tensor:
    """``sum_i w_i * d(a_i, p_i) / (sum_j d(a_i, n_ji) + eps)`` with mean-L1 distances.

    ``negatives[j][i]`` is negative j's level-i feature. Reference implementation of the whole
    term; :class:`DCKD` computes the same value one negative at a time.
    """
    total = anchor[0].new_zeros((), dtype=torch.float32)
    for i, (a, p, w) in enumerate(zip(anchor, positive, weights)):
        acc = NegativeDistance(a)
        for neg in negatives:
            acc.add(neg[i])
        d_pos = (a.float() - p.detach().float()).abs().flatten(1).mean(1)
        total = total + w * contrastive_ratio(d_pos, acc.result(), reduction)
    return total


def code_ce(s_logits: torch.Tensor, t_logits: torch.Tensor, variant: str = "paper") -> torch.Tensor:
    """Cross-entropy between codebook assignments, averaged over latent pixels.

    ``s_logits``/``t_logits``: (N, K) = ``-||z - e_k||^2``. ``paper``: Eq. 9,
    ``-sum_k C^T_k log C^S_k`` with ``C = softmax(logits)``. ``code``: the released
    ``F.cross_entropy(C^S, C^T)``, which takes the probabilities C^S as logits, i.e.
    ``-sum_k C^T_k log softmax(C^S)_k``.
    """
    target = torch.softmax(t_logits.detach().float(), dim=1)
    s = s_logits.float()
    if variant == "code":
        s = torch.softmax(s, dim=1)
    elif variant != "paper":
        raise SrkdError(f"ce_variant must be paper or code, got '{variant}'")
    return -(target * torch.log_softmax(s, dim=1)).sum(1).mean()


# ----------------------------------------------------------------------------- the method


@dataclass
class DCKDParams(KDParams):
    lambda_dcl: float = hp(0.1, "weight of the dynamic contrastive term (paper Tab. 7; config cl_opt 0.1)", min=0.0)
    lambda_ce: float = hp(0.001, "weight of the codebook cross-entropy (paper Tab. 7; config ce_opt 0.001)", min=0.0)
    dcl_weights: tuple[str, ...] = hp(LEVEL_WEIGHTS, "weights of the 5 VQGAN feature levels, shallow to deep (paper appendix)")
    dcl_reduction: str = hp("batch", "ratio of batch-mean distances (released code) or mean of per-sample ratios",
                            choices=("batch", "sample"))
    num_negatives: int = hp(5, "negatives N: history outputs on the LR and degraded copies (paper N=5; code 1 + num_neg 4)", min=1)
    neg_clean: bool = hp(True, "one negative is the history model on the un-degraded LR (released code)")
    noise_prob: float = hp(1.0, "probability of Gaussian noise per degraded copy (config gaussian_noise_prob)", min=0.0, max=1.0)
    noise_sigma_min: float = hp(1.0, "noise sigma lower bound, 0-255 scale", min=0.0)
    noise_sigma_max: float = hp(30.0, "noise sigma upper bound, 0-255 scale", min=0.0)
    gray_noise_prob: float = hp(0.5, "probability that a sample's noise is the same in all channels", min=0.0, max=1.0)
    blur_prob: float = hp(0.0, "probability of Gaussian blur per copy (kernel 3-11, sigma 0.1-2; 0 in the config)", min=0.0, max=1.0)
    resize_prob: float = hp(0.0, "probability of a down/up resize and back per copy (scale 0.5-1.5; 0 in the config)", min=0.0, max=1.0)
    history_alpha: float = hp(0.1, "history update his <- alpha*his + (1-alpha)*ema (paper appendix)", min=0.0, max=1.0)
    history_steps: tuple[str, ...] = hp(INTERVALS, "update interval in each phase, at the reference run length (config train.step)")
    history_bounds: tuple[str, ...] = hp(BOUNDS, "phase boundaries as fractions of the run (default: thirds; "
                                         "the released code: 0.4,0.8, i.e. 100k and 200k of 250k)")
    history_reference: int = hp(REFERENCE_STEPS, "run length the intervals are given for; they scale with train.steps "
                                "(0: use them as they are)", min=0)
    history_source: str = hp("ema", "what the history model follows: the engine's EMA student (code) or the raw student",
                             choices=("ema", "student"))
    ce_variant: str = hp("paper", "paper: Eq. 9 -sum C_T log C_S; code: the release's cross_entropy on probabilities",
                         choices=("paper", "code"))
    vqgan: str = hp("", "VQGAN f16 n1024 weights: taming last.ckpt, .safetensors, hf://..., or random-small/random "
                    "(untrained: tests and timing only); empty: $SRKD_VQGAN")
    vqgan_input: str = hp("01", "images enter the VQGAN in [0,1] (released code) or mapped to [-1,1] (its training range)",
                          choices=("01", "pm1"))
    vqgan_precision: str = hp("amp", "VQGAN forward precision: the training precision (amp) or always fp32",
                              choices=("amp", "fp32"))
    vq_chunk: int = hp(0, "most images per no-grad VQGAN/history pass (teacher + negatives); 0: all B*(N+1) at once",
                       min=0)
    lcr: bool = hp(False, "DCKD*: add L1(S(x), revert(T(aug(x)))), the released config's label consistency (lcr_opt)")
    lambda_lcr: float = hp(1.0, "weight of the lcr term (config lcr_opt 1.0)", min=0.0)
    lcr_prob: float = hp(0.5, "probability of each invertible augmentation of the teacher's input (config noisy.prob)",
                         min=0.0, max=1.0)


class DCKD(KD):
    name = "dckd"
    Params = DCKDParams
    summary = "dynamic contrastive KD: KD + VQGAN-feature contrast against a history student + codebook CE"

    def setup(self) -> None:
        super().setup()
        p = self.params
        self.level_weights = parse_floats(p.dcl_weights, "dcl_weights", 5, lo=0.0)
        self.intervals = tuple(int(v) for v in parse_floats(p.history_steps, "history_steps", lo=1.0))
        self.bounds = parse_floats(p.history_bounds, "history_bounds", len(self.intervals) - 1, lo=0.0)
        if any(b > 1 for b in self.bounds) or list(self.bounds) != sorted(self.bounds):
            raise SrkdError(f"history_bounds must be increasing fractions in [0, 1], got {self.bounds}")
        if p.noise_sigma_max < p.noise_sigma_min:
            raise SrkdError(f"noise_sigma_max ({p.noise_sigma_max}) is below noise_sigma_min ({p.noise_sigma_min})")
        self.degradation = Degradation(p.noise_prob, p.noise_sigma_min, p.noise_sigma_max, p.gray_noise_prob,
                                       p.blur_prob, p.resize_prob)
        self.vqgan = None
        if p.lambda_dcl > 0 or p.lambda_ce > 0:
            from .vqgan import load_vqgan

            self.vqgan = load_vqgan(p.vqgan, p.vqgan_input).to(next(self.student.parameters()).device)
        self.history = None
        if p.lambda_dcl > 0:
            # theta_his starts as the EMA student, which at step 0 is the student itself.
            self.history = copy.deepcopy(self.student).eval().requires_grad_(False)
        self.total_steps: int | None = None
        self.history_updates = 0
        self.seed = 0
        self._gen: torch.Generator | None = None
        self._pending_rng: torch.Tensor | None = None
        self._last: dict[str, float] = {}

    # -- engine hooks --------------------------------------------------------------------------

    def bind_engine(self, state) -> None:
        super().bind_engine(state)
        self.total_steps = int(state.config.train.steps)
        self.seed = int(state.config.train.seed) * 1_000_003 + 7919 + int(getattr(state, "rank", 0))
        if self.history is not None:
            # The code's update_model_ema(0): start from the EMA model the engine has just made
            # (a resumed run then overwrites this with the saved history).
            history_update_(self.history, self.history_source(), 0.0)

    def frozen_modules(self) -> dict[str, nn.Module]:
        mods = super().frozen_modules()
        if self.history is not None:
            mods["history"] = self.history
        if self.vqgan is not None:
            mods["vqgan"] = self.vqgan
        return mods

    def history_source(self) -> nn.Module:
        ema = getattr(self.engine, "ema", None) if self.engine is not None else None
        return ema if (self.params.history_source == "ema" and ema is not None) else self.student

    def history_interval(self, iteration: int) -> int:
        total = self.total_steps or self.params.history_reference or REFERENCE_STEPS
        return history_interval(iteration, total, self.intervals, self.bounds, self.params.history_reference)

    def on_step_end(self, step: int) -> None:
        super().on_step_end(step)
        iteration = step + 1  # the released code counts iterations from 1
        if self.history is not None and iteration % self.history_interval(iteration) == 0:
            history_update_(self.history, self.history_source(), self.params.history_alpha)
            self.history_updates += 1

    def extra_state(self) -> dict:
        state = {"history_updates": self.history_updates}
        if self.history is not None:
            state["history"] = {k: v.detach().cpu() for k, v in self.history.state_dict().items()}
        if self._gen is not None:
            state["rng"] = self._gen.get_state()
        elif self._pending_rng is not None:
            state["rng"] = self._pending_rng
        return state

    def load_extra_state(self, state: dict) -> None:
        self.history_updates = int(state.get("history_updates", 0))
        if self.history is not None:
            if "history" not in state:
                raise SrkdError("the checkpoint has no DCKD history model; pass --overwrite to start over")
            self.history.load_state_dict(state["history"])
        if "rng" in state:
            self._pending_rng = state["rng"]
            self._gen = None

    def rng(self, device: torch.device) -> torch.Generator:
        """The negatives' and augmentations' private random stream (saved with the run)."""
        if self._gen is None or self._gen.device != device:
            self._gen = torch.Generator(device=device)
            self._gen.manual_seed(self.seed)
            if self._pending_rng is not None:
                self._gen.set_state(self._pending_rng)
                self._pending_rng = None
        return self._gen

    def log_values(self) -> dict[str, float]:
        return dict(self._last, history_updates=float(self.history_updates))

    def describe(self) -> dict:
        d = super().describe()
        if self.vqgan is not None:
            d["vqgan"] = self.vqgan.describe()
        if self.history is not None:
            total = self.total_steps or self.params.history_reference or REFERENCE_STEPS
            starts = [1] + [round(b * total) + 1 for b in self.bounds]
            d["history_intervals"] = [self.history_interval(it) for it in starts]
        return d

    # -- the loss ------------------------------------------------------------------------------

    def _vq_context(self, device: torch.device):
        import contextlib

        from ..precision import image_convs_fp32

        amp = torch.is_autocast_enabled(device.type)
        stack = contextlib.ExitStack()
        if self.params.vqgan_precision == "fp32" and amp:
            stack.enter_context(torch.autocast(device.type, enabled=False))
            amp = False
        # The 3-channel input conv reads the SR image: in bf16 it would round it to ~1/256,
        # about the size of the student-teacher differences being measured.
        stack.enter_context(image_convs_fp32(self.vqgan, amp))
        return stack

    def run_history(self, x: torch.Tensor) -> torch.Tensor:
        from ..precision import image_convs_fp32

        with torch.no_grad(), image_convs_fp32(self.history, torch.is_autocast_enabled(x.device.type)):
            return self.history(x).float()

    def lcr_target(self, lr: torch.Tensor) -> torch.Tensor:
        """``revert(T(aug(lr)))``: the teacher on invertibly augmented inputs, mapped back exactly."""
        from .upcycle import augment, draw_augmentations, revert

        if self.params.lcr_prob > 0 and lr.shape[-1] != lr.shape[-2]:
            # fail on the first batch, not on whichever batch first draws a transpose
            raise SrkdError(f"lcr transposes the teacher's input and needs square patches, got LR "
                            f"{lr.shape[-2]}x{lr.shape[-1]}; use square patches or lcr=false")
        draws = draw_augmentations(lr.shape[0], self.params.lcr_prob, lr.device, self.rng(lr.device))
        return revert(self.run_teacher(augment(lr, draws)).sr, draws)

    def loss_terms(self, lr, hr, s, t):
        p = self.params
        terms = super().loss_terms(lr, hr, s, t)
        if p.lcr and p.lambda_lcr > 0:
            terms["lcr"] = p.lambda_lcr * l1(s.sr, self.lcr_target(lr))
        if self.vqgan is not None:
            terms.update(self.vq_terms(lr, s.sr, t.sr))
        return terms

    @torch.no_grad()
    def _reference_features(self, lr, t_sr, accs, need_latent):
        """The teacher's feature levels (and latent), and every negative's distances added to
        ``accs``, in no-grad passes of at most ``vq_chunk`` images (the batch-wide passes are
        faster on CPUs; the chunking bounds the memory on large batches)."""
        p, vq, b = self.params, self.vqgan, lr.shape[0]
        per_pass = max(1, p.vq_chunk // b) if p.vq_chunk > 0 else p.num_negatives + 1
        inputs = negative_inputs(lr, p.num_negatives, p.neg_clean, self.degradation, self.rng(lr.device))
        groups = [t_sr]
        for i in range(0, len(inputs), per_pass):
            groups += self.run_history(torch.cat(inputs[i:i + per_pass])).split(b)
        t_feats = t_z = None
        for i in range(0, len(groups), per_pass):
            x = torch.cat(groups[i:i + per_pass])
            if i == 0 and need_latent:
                feats, t_z = vq.features_and_latent(x, latent_of=b)
            else:
                feats = vq.features(x)
            for j in range(len(groups[i:i + per_pass])):
                level = [f[j * b:(j + 1) * b] for f in feats]
                if i + j == 0:
                    t_feats = level
                else:
                    for acc, f in zip(accs, level):
                        acc.add(f)
        return t_feats, t_z

    def vq_terms(self, lr: torch.Tensor, s_sr: torch.Tensor, t_sr: torch.Tensor) -> dict[str, torch.Tensor]:
        """L_dcl and L_ce of one batch, already weighted."""
        p = self.params
        vq = self.vqgan
        need_dcl, need_ce = p.lambda_dcl > 0, p.lambda_ce > 0
        terms: dict[str, torch.Tensor] = {}
        with self._vq_context(lr.device):
            if need_dcl:
                s_feats, s_z = vq.features_and_latent(s_sr) if need_ce else (vq.features(s_sr), None)
                accs = [NegativeDistance(f) for f in s_feats]
                t_feats, t_z = self._reference_features(lr, t_sr, accs, need_ce)
                total, ratios = 0.0, []
                for w, a, pf, acc in zip(self.level_weights, s_feats, t_feats, accs):
                    d_pos = (a.float() - pf.float()).abs().flatten(1).mean(1)
                    r = contrastive_ratio(d_pos, acc.result(), p.dcl_reduction)
                    ratios.append(float(r.detach()))
                    total = total + w * r
                terms["dcl"] = p.lambda_dcl * total
                self._last = {f"dcl_ratio{i}": v for i, v in enumerate(ratios)}
            else:
                s_z = vq.latent(s_sr)
                with torch.no_grad():
                    t_z = vq.latent(t_sr)
            if need_ce:
                terms["ce"] = p.lambda_ce * code_ce(vq.code_logits(s_z), vq.code_logits(t_z), p.ce_variant)
        return terms
