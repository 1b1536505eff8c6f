"""Channel splitting: the slimmable forward of CSD (Wang et al., IJCAI 2021).

One set of parameters serves every width. At width ``w`` each feature space of ``C`` channels
keeps ``n = floor(w*C)`` of them and every convolution uses the matching slice of its weight and
bias, exactly as ``weight[:int(C_out*w), :int(C_in*w)]`` in the official CSD code:

* the first convolution keeps its 3 colour inputs and the last one its 3 colour outputs; the
  frozen mean-shift convolutions are untouched;
* a sub-pixel convolution (``C -> r*r*C`` followed by ``PixelShuffle(r)``) keeps the outputs
  ``c*r*r + k`` for every kept feature channel ``c`` and every ``k < r*r``, i.e. the first
  ``n*r*r`` of them, so the shuffled map is the kept feature space again;
* concatenations of feature maps (CARN's cascades) keep the kept channels of each part;
* RCAN's channel-attention squeeze keeps ``max(1, n // reduction)`` channels. For integer
  ``reduction`` this equals the official ``int(C/reduction * w)`` whenever that is >= 1; the
  official code would produce an empty squeeze (and crash) below that, we keep one channel
  so that every width in (0, 1] has a network;
* grouped convolutions (CARN-M, ``group`` g) keep their g groups and the first ``n/g`` channels
  *of every group*, so the sub-network is a CARN-M with the same grouping and ``n`` features;
  ``n`` must then be a multiple of g. For ungrouped networks this is the plain prefix rule.

The rule is written once per architecture, in its spec (``ArchSpec.slicing``), as "which feature
space feeds and leaves each convolution"; :func:`slim_state_dict` turns it into sliced tensors whose names and shapes are
exactly those of the same architecture built with ``n`` features (:func:`slim_config`). The
slimmable forward is ``torch.func.functional_call`` of the unchanged module with those tensors,
so official weights and key names stay as they are and gradients reach the shared parameters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call

from ..errors import SrkdError
from ..models.registry import ARCHS
from ..models.spec import Rule, Slicing, Space



# ----------------------------------------------------------------------------- widths


def check_width(width) -> float:
    """A width as a float in (0, 1], or an SrkdError telling what is allowed."""
    try:
        w = float(width)
    except (TypeError, ValueError):
        raise SrkdError(f"width must be a number in (0, 1], got {width!r}") from None
    if not math.isfinite(w) or w <= 0 or w > 1:
        raise SrkdError(f"width must be in (0, 1] (for example 0.25 or 0.5), got {width!r}")
    return w


def split_channels(channels: int, width: float) -> int:
    """``floor(width * channels)``, robust to binary rounding (0.29 * 100 is 28.999...)."""
    return int(math.floor(check_width(width) * channels + 1e-6))


# ----------------------------------------------------------------------------- rules


def _slicing(model: nn.Module) -> Slicing:
    spec = ARCHS.get(str(getattr(model, "arch", type(model).__name__)).lower())
    if spec is None or spec.slicing is None:
        splittable = ", ".join(n for n, s in ARCHS.items() if s.slicing is not None)
        why = f" ({spec.no_slicing})" if spec is not None and spec.no_slicing else ""
        name = spec.name if spec else getattr(model, "arch", type(model).__name__)
        raise SrkdError(f"a '{name}' model cannot be channel-split{why}; channel splitting supports {splittable}")
    return spec.slicing


def _conv_rules(model: nn.Module) -> list[Rule]:
    """(module path, output space, input space) for every convolution that is sliced."""
    try:
        return _slicing(model).rules(model)
    except ValueError as exc:  # a malformed upsampler
        raise SrkdError(f"cannot channel-split this {model.arch} model: {exc}") from None


def _setting(model: nn.Module, key: str | None) -> int:
    return int(getattr(model, key, 1) or 1) if key else 1


@dataclass(frozen=True)
class _Plan:
    """Kept indices for one width: feature channels (in full coordinates) and squeeze size."""

    full: int
    kept: torch.Tensor
    n: int
    squeeze_full: int
    squeeze: int
    aux_full: int = 0
    aux: int = 0

    def indices(self, space: Space) -> torch.Tensor | int | None:
        """Kept indices of a space; an int ``m`` means "the first m" (a cheap view); None: all."""
        if space.kind == "rgb":
            return None
        if space.kind == "squeeze":
            return self.squeeze
        if space.kind == "aux":
            return None if self.aux == self.aux_full else self.aux
        if self.n == self.full:
            return None
        prefix = bool(torch.equal(self.kept, torch.arange(self.n)))
        if space.parts == 1 and prefix:
            return self.n * space.subpixel
        idx = self.kept
        if space.subpixel > 1:
            idx = (idx[:, None] * space.subpixel + torch.arange(space.subpixel)).reshape(-1)
        if space.parts > 1:
            idx = torch.cat([idx + i * self.full for i in range(space.parts)])
        return idx


def _plan(model: nn.Module, width: float) -> _Plan:
    width = check_width(width)
    rules = _slicing(model)
    full = int(getattr(model, rules.width))
    n = split_channels(full, width)
    arch = model.arch
    if n < 1:
        raise SrkdError(f"width {width} leaves no channel of the {full} of this {arch} model; use a width >= {1 / full:.4g}")
    g = _setting(model, rules.groups)
    if n % g:
        ok = ", ".join(f"{m / full:g}" for m in range(g, full + 1, g)[:4])
        raise SrkdError(
            f"width {width} gives {n} channels, which the {g} groups of this {arch} model cannot share "
            f"evenly; choose a width giving a multiple of {g} channels (e.g. {ok})"
        )
    size = full // g
    kept = torch.cat([torch.arange(j * size, j * size + n // g) for j in range(g)])
    r = _setting(model, rules.reduction)
    aux_full = int(getattr(model, rules.aux)) if rules.aux else 0
    aux = split_channels(aux_full, width) if rules.aux else 0
    if rules.aux and aux < 1:
        raise SrkdError(f"width {width} leaves no channel of the {aux_full} {rules.aux} of this {arch} model")
    return _Plan(full, kept, n, full // r, max(1, n // r), aux_full, aux)


# ----------------------------------------------------------------------------- slicing


def _take(t: torch.Tensor, dim: int, idx) -> torch.Tensor:
    if idx is None:
        return t
    if isinstance(idx, int):
        return t.narrow(dim, 0, idx)
    return t.index_select(dim, idx.to(t.device))


def _in_group_indices(idx, conv: nn.Conv2d, name: str) -> torch.Tensor | int | None:
    """Kept input channels of a grouped conv, as positions inside one group.

    Every group must keep the same positions, or the sliced conv would not be a grouped conv.
    """
    if idx is None or conv.groups == 1:
        return idx
    size = conv.in_channels // conv.groups
    full = torch.arange(idx) if isinstance(idx, int) else idx
    local = [full[(full >= j * size) & (full < (j + 1) * size)] - j * size for j in range(conv.groups)]
    if any(not torch.equal(loc, local[0]) for loc in local[1:]):
        raise SrkdError(f"cannot channel-split the grouped convolution {name}: groups would keep different channels")
    return local[0]


def slim_state_dict(model: nn.Module, width: float) -> dict[str, torch.Tensor]:
    """Sliced convolution weights and biases at ``width``, under the model's own key names.

    The tensors are views or gathers of the model's parameters, so gradients flow back to the
    shared weights. Only sliced entries are returned; merge with ``model.state_dict()`` for a
    complete state (see :func:`srkd.compress.extract_student`).
    """
    plan = _plan(model, width)
    rules = _conv_rules(model)
    covered = {name for name, _, _ in rules}
    out: dict[str, torch.Tensor] = {}
    for name, out_space, in_space in rules:
        conv = model.get_submodule(name)
        o_idx = plan.indices(out_space)
        i_idx = _in_group_indices(plan.indices(in_space), conv, name)
        out[f"{name}.weight"] = _take(_take(conv.weight, 0, o_idx), 1, i_idx)
        if conv.bias is not None:
            out[f"{name}.bias"] = _take(conv.bias, 0, o_idx)
    _check_covered(model, covered)
    return out


def _check_covered(model: nn.Module, covered: set[str]) -> None:
    """Refuse a model with parametrised layers the rules do not know (it would not be split)."""
    for name, module in model.named_modules():
        if name in covered or name.startswith(("sub_mean", "add_mean")) or not list(module.parameters(recurse=False)):
            continue
        raise SrkdError(
            f"cannot channel-split this {getattr(model, 'arch', type(model).__name__)} model: "
            f"layer '{name}' ({type(module).__name__}) is not covered by the splitting rules"
        )


def slim_config(model: nn.Module, width: float) -> dict:
    """Constructor arguments of the plain model that the width-``width`` sub-network is."""
    plan = _plan(model, width)
    _conv_rules(model)
    rules = _slicing(model)
    config = {**model.config(), rules.width: plan.n, **({rules.aux: plan.aux} if rules.aux else {})}
    return rules.config(config, plan.n) if rules.config else config


def supports_width(model: nn.Module, width: float) -> bool:
    """Whether ``model`` can run at ``width`` (no exception, for UIs that list choices)."""
    try:
        _plan(model, width)
        _conv_rules(model)
    except SrkdError:
        return False
    return True


def slim_forward(model: nn.Module, x: torch.Tensor, width: float) -> torch.Tensor:
    """Run ``model`` as its width-``width`` sub-network (width 1 is the ordinary forward)."""
    if check_width(width) == 1.0:
        _conv_rules(model)
        return model(x)
    return functional_call(model, slim_state_dict(model, width), (x,))


class Slimmable(nn.Module):
    """A model plus a current width: ``Slimmable(edsr, 0.25)(x)`` is the 0.25 sub-network.

    The wrapped module is stored as ``net`` and is the only owner of the parameters, so an
    optimiser over ``Slimmable.parameters()`` trains the shared weights of every width.
    """

    def __init__(self, model: nn.Module, width: float = 1.0):
        super().__init__()
        _conv_rules(model)
        self.net = model
        self.width = check_width(width)
        _plan(model, self.width)

    @property
    def arch(self) -> str:
        return self.net.arch

    @property
    def scale(self) -> int:
        return self.net.scale

    @property
    def scales(self) -> tuple[int, ...]:
        return self.net.scales

    def forward(self, x: torch.Tensor, width: float | None = None) -> torch.Tensor:
        return slim_forward(self.net, x, self.width if width is None else width)
