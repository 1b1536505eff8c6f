"""One object per architecture: everything srkd knows about it, declared beside the network.

An :class:`ArchSpec` is written at the bottom of the architecture's model file and listed once in
:mod:`srkd.models.registry`. The registry (presets), the converter (recognising foreign state
dicts and reading the configuration back), the model zoo (official weights), channel splitting
(:mod:`srkd.compress.slim`), cross-scale ``--init`` (the upsampler prefixes), tiling (finite receptive
field or global context), precision choice and the model tests are all driven by these specs, so
adding an architecture touches its own file, one registry line and its test (the pattern of
spandrel's ``architectures/<Name>/__init__.py`` and timm's model files).

The channel-space vocabulary used by the slicing rules (``RGB``, ``FEAT``, ``SQUEEZE``, ...) is
defined here too, so that model files can state their rules without importing :mod:`srkd.compress.slim`.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

StateDict = dict[str, torch.Tensor]


# ----------------------------------------------------------------------------- weights


@dataclass(frozen=True)
class ZooEntry:
    """An official weight release.

    ``sha256`` is the full digest when it is published; otherwise ``hash_prefix`` is the prefix
    embedded in the file name (torch.hub convention), the strongest check the source allows.
    ``url`` is None when the release has no direct download link; ``how_to_get`` then explains.
    """

    filename: str
    url: str | None
    sha256: str | None = None
    hash_prefix: str | None = None
    scale: int | None = None  # head to keep when converting a multi-scale file
    how_to_get: str = ""
    bundled: bool = False


# ----------------------------------------------------------------------------- channel spaces


@dataclass(frozen=True)
class Space:
    """A channel dimension of a convolution, for channel splitting (:mod:`srkd.compress.slim`).

    ``rgb``: colour or any other space that is never sliced (an ESA block's fixed width);
    ``feat``: the feature space, possibly concatenated ``parts`` times or expanded by a sub-pixel
    (or gain) factor ``subpixel``; ``squeeze``: an attention squeeze of ``feat // reduction``;
    ``aux``: a second feature width (``Slicing.aux``, such as RLFN's mid channels), sliced to
    ``floor(width * size)`` as a prefix.
    """

    kind: str  # "rgb" | "feat" | "squeeze" | "aux"
    parts: int = 1
    subpixel: int = 1


RGB, FEAT, SQUEEZE, AUX = Space("rgb"), Space("feat"), Space("squeeze"), Space("aux")


def cat(parts: int) -> Space:
    """``parts`` feature maps concatenated along channels (CARN's cascades, SPAN's conv_cat)."""
    return Space("feat", parts=parts)


def up(factor: int) -> Space:
    """A feature space expanded ``factor`` times (a sub-pixel conv's output, SPAN's gain convs)."""
    return Space("feat", subpixel=factor)


Rule = tuple[str, Space, Space]  # (conv module path, output space, input space)


@dataclass(frozen=True)
class Slicing:
    """How an architecture is channel-split: its rules and the config keys they depend on."""

    rules: Callable[[nn.Module], list[Rule]]
    width: str = "n_feats"  # config key of the feature width
    groups: str | None = None  # config key of the conv groups (CARN-M)
    reduction: str | None = None  # config key of the attention reduction (RCAN)
    aux: str | None = None  # config key of a second sliced width (RLFN's mid_feats); None: none
    #: constructor arguments of the width-n sub-network, from the full config and the plan
    config: Callable[[dict, int], dict] | None = None


def upsampler_rules(model: nn.Module, prefix: str, out: Space = FEAT) -> list[Rule]:
    """Each conv of a sub-pixel upsampler ``prefix``, with the factor of the PixelShuffle after it.

    ``out`` is the space the shuffled map belongs to: FEAT for EDSR's feature upsampler, RGB for
    the one-conv colour upsamplers of IMDN, RLFN and SPAN (never sliced).
    """
    seq = model.get_submodule(prefix)
    rules, pending = [], None
    for name, module in seq.named_children():
        if isinstance(module, nn.Conv2d):
            pending = f"{prefix}.{name}"
        elif isinstance(module, nn.PixelShuffle):
            if pending is None:
                raise ValueError(f"{prefix}: PixelShuffle without a convolution before it")
            rules.append((pending, up(module.upscale_factor**2) if out.kind == "feat" else RGB, FEAT))
            pending = None
    if pending is not None:
        raise ValueError(f"{prefix}: a convolution with no PixelShuffle after it")
    return rules


# ----------------------------------------------------------------------------- spec


@dataclass(frozen=True)
class Family:
    """A preset family: ``{name}-x{s}`` for every ``s`` in ``scales``."""

    name: str
    config: dict
    description: str
    scales: tuple[int, ...] = (2, 3, 4)


@dataclass(frozen=True)
class Format:
    """A state-dict layout an architecture is recognised in.

    ``detect`` answers "is this mine?" from key names (and shapes); ``to_official`` renames a
    foreign layout (BasicSR) to the official names, or fills in what it lacks.
    """

    name: str
    detect: Callable[[StateDict], bool]
    to_official: Callable[[StateDict], StateDict] | None = None


@dataclass(frozen=True)
class ArchSpec:
    """Everything about one architecture (see the module docstring)."""

    name: str
    cls: type[nn.Module]
    families: tuple[Family, ...]
    formats: tuple[Format, ...]
    #: constructor arguments read back from an official-named state dict
    read_config: Callable[[StateDict], dict]
    #: state-dict prefixes of the scale-specific upsampler (left fresh by a cross-scale --init)
    upsampler: tuple[str, ...]
    #: feature taps body1/body2/body3 (1/3, 2/3 and the end of the body) as module paths
    taps: Callable[[nn.Module], dict[str, str]]
    slicing: Slicing | None = None
    no_slicing: str = ""  # why channel splitting is not meaningful, when slicing is None
    #: "local": a finite receptive field (traced by srkd.infer); "global": context from the whole
    #: input (RCAN's pooling), so tiles only approximate whole-image output
    context: str = "local"
    #: the model pads its input to this multiple itself (attention windows): a number, or a
    #: function of the model (SwinIR: its window size)
    pad_multiple: int | Callable[[nn.Module], int] = 1
    min_tile_pad: int = 0  # LR px of tile context needed beyond the traced convolutions (attention)
    min_input: int = 1  # smallest input side the network accepts (ESA's strided conv + 7x7 pool: 15)
    #: measured fp32 -> bf16 Set5 PSNR change (dB) per preset (benchmarks/precision_table.py);
    #: a loss above BF16_LIMIT_DB makes --precision auto pick fp32
    bf16_delta_db: dict[str, float] = field(default_factory=dict)
    supports_fp16: bool = True
    weights: dict[str, ZooEntry] = field(default_factory=dict)
    #: small configurations the spec-driven tests build (each must run on a 12x10 input)
    examples: tuple[str, ...] = ()
    reference: str = ""  # where the layout comes from (official code)

    def __post_init__(self):
        self.cls.spec = self  # the model class finds its own facts (feature taps, config)

    @property
    def presets(self) -> dict[str, tuple[dict, str]]:
        return {f"{f.name}-x{s}": ({**f.config, "scale": s}, f.description) for f in self.families for s in f.scales}

    def bf16_ok(self, preset: str | None = None) -> bool:
        """Whether bf16 stays within BF16_LIMIT_DB of fp32 (for a preset, or every one measured)."""
        if preset is not None and preset in self.bf16_delta_db:
            return self.bf16_delta_db[preset] >= -BF16_LIMIT_DB
        return all(d >= -BF16_LIMIT_DB for d in self.bf16_delta_db.values())


BF16_LIMIT_DB = 0.05


# ----------------------------------------------------------------------------- model base


def _jsonable(value):
    return [_jsonable(v) for v in value] if isinstance(value, (tuple, list)) else value


class SRModel(nn.Module):
    """Base of srkd's networks: records its constructor arguments and exposes its spec's taps.

    ``config()`` is the outermost constructor's arguments (defaults applied), each replaced by the
    attribute of the same name when the constructor stored a normalised value (``scales`` sorted,
    floats coerced), so ``build_model(arch, **model.config())`` rebuilds the same network. No
    architecture writes ``config()`` by hand.
    """

    spec: ArchSpec  # set by ArchSpec.__post_init__
    arch: str

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is None:
            return
        signature = inspect.signature(init)

        @functools.wraps(init)
        def recording_init(self, *args, **kw):
            outer = "_config_args" not in self.__dict__
            if outer:
                bound = signature.bind(self, *args, **kw)
                bound.apply_defaults()
                self.__dict__["_config_args"] = {k: v for k, v in bound.arguments.items() if k != "self"}
            init(self, *args, **kw)

        cls.__init__ = recording_init

    def config(self) -> dict:
        out = {}
        for key, arg in self.__dict__["_config_args"].items():
            value = getattr(self, key, arg)
            out[key] = _jsonable(arg if isinstance(value, (nn.Module, torch.Tensor)) else value)
        return out

    @property
    def feature_taps(self) -> dict[str, str]:
        return self.spec.taps(self)


def body_taps(prefix: str, n: int, end: str, second: int | None = None, base: int = 0) -> dict[str, str]:
    """Feature taps at stages ``n//3 - 1`` and ``2n//3 - 1`` of a body of ``n`` stages (or
    ``second``), and at its end: the FAKD/FACD positions, 1/3 and 2/3 of the way down.

    RCAN passes ``second = 2n//3``: FAKD's ``model/rcan.py`` taps ``group_id == 2 or 6`` of 10
    groups, i.e. after the 3rd and the 7th group (docs/models.md, "Feature taps"). ``base`` 1
    names the stages from 1 (RFDN's ``B1..B4``, RLFN's and SPAN's ``block_1..``).
    """
    first = max(n // 3 - 1, 0)
    second = max(2 * n // 3 - 1, 0) if second is None else min(second, max(n - 1, 0))
    return {"body1": f"{prefix}{first + base}", "body2": f"{prefix}{second + base}", "body3": end}
