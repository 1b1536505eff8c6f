"""SPAN (Wan et al., CVPRW 2024; NTIRE 2024 ESR winner) with the key names spandrel detects.

Layout follows spandrel's ``architectures/SPAN`` (from hongyuanyu/SPAN): ``conv_1``, six
parameter-free-attention blocks ``block_1..block_6`` of three re-parameterisable convolutions
``c{1,2,3}_r``, ``conv_cat`` (1x1 over [conv_1, conv_2, block_1, block_6's first conv]),
``conv_2`` and a colour sub-pixel ``upsampler``. Each re-parameterisable ``Conv3XC`` trains as
``1x1 -> 3x3 -> 1x1`` (gain 2) plus a 1x1 skip ``sk`` and runs, in eval mode, as the single 3x3
``eval_conv`` those fuse into. ``eval_conv`` is derived, never trained: it is recomputed from the
training branches at every eval forward (as spandrel does) and written into ``state_dict()``, so
files saved here load in spandrel and give its output. The input is normalised as
``(x - mean) * img_range``; the output is *not* de-normalised (the network learns [0, 1]).

Released deployed files (NTIRE 2024 ``team38_span_ch28_slim.pth``, ``team39_spantiny_ch26``)
hold only the fused ``eval_conv`` tensors. They convert exactly: the training branches are set
to pass the fused kernel through unchanged (identity 1x1s, zero skip).
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from . import keys
from .blocks import DIV2K_RGB_MEAN, ColourUpsampler, check_scale
from .spec import FEAT, RGB, ArchSpec, Family, Format, Slicing, SRModel, ZooEntry, body_taps, cat, up

N_BLOCKS = 6  # fixed: the forward concatenates block_1 and block_6's first conv by name


class Conv3XC(nn.Module):
    """Re-parameterisable 3x3 conv: ``conv`` (1x1, 3x3 valid on a zero-padded input, 1x1) + ``sk``."""

    train_only = ("sk", "conv")  # not part of the deployed network (srkd.complexity.count_params)

    def __init__(self, c_in: int, c_out: int, gain: int = 2):
        super().__init__()
        self.sk = nn.Conv2d(c_in, c_out, 1)
        self.conv = nn.Sequential(nn.Conv2d(c_in, c_in * gain, 1), nn.Conv2d(c_in * gain, c_out * gain, 3),
                                  nn.Conv2d(c_out * gain, c_out, 1))
        self.eval_conv = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.eval_conv.weight.requires_grad_(False)
        self.eval_conv.bias.requires_grad_(False)
        self.register_state_dict_post_hook(_write_fused)

    def fused(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The 3x3 kernel and bias equal to ``conv(pad(x)) + sk(x)`` (no gradient, as spandrel)."""
        device = self.sk.weight.device.type
        no_autocast = torch.autocast(device, enabled=False) if device in ("cpu", "cuda", "mps") else contextlib.nullcontext()
        with torch.no_grad(), no_autocast:
            c1, c2, c3 = self.conv
            w1, b1, w2, b2, w3, b3 = c1.weight, c1.bias, c2.weight, c2.bias, c3.weight, c3.bias
            # Composing convs: the kernel of conv2(conv1(x)) is conv1's kernel run through conv2,
            # written as a convolution over the (flipped, transposed) first kernel.
            w = F.conv2d(w1.flip(2, 3).permute(1, 0, 2, 3), w2, padding=2).flip(2, 3).permute(1, 0, 2, 3)
            b = (w2 * b1.reshape(1, -1, 1, 1)).sum((1, 2, 3)) + b2
            weight = F.conv2d(w.flip(2, 3).permute(1, 0, 2, 3), w3).flip(2, 3).permute(1, 0, 2, 3)
            bias = (w3 * b.reshape(1, -1, 1, 1)).sum((1, 2, 3)) + b3
            weight = weight + F.pad(self.sk.weight, [1, 1, 1, 1])
            return weight.contiguous(), (bias + self.sk.bias).contiguous()

    def deploy(self) -> None:
        """Store the fused kernel in ``eval_conv`` and run it alone from now on (export, srkd.export)."""
        weight, bias = self.fused()
        self.eval_conv.weight.data.copy_(weight)
        self.eval_conv.bias.data.copy_(bias)
        self.deployed = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if getattr(self, "deployed", False):
            return self.eval_conv(x)
        if self.training:
            return self.conv(F.pad(x, (1, 1, 1, 1))) + self.sk(x)
        # Through eval_conv (with the fused tensors swapped in) so that tracing, hooks and the
        # inference rewrites of srkd.infer see an ordinary 3x3 convolution.
        weight, bias = self.fused()
        return functional_call(self.eval_conv, {"weight": weight, "bias": bias}, (x,))


def _write_fused(module: Conv3XC, state: dict, prefix: str, local_metadata) -> None:
    weight, bias = module.fused()
    state[prefix + "eval_conv.weight"] = weight
    state[prefix + "eval_conv.bias"] = bias


class SPAB(nn.Module):
    """Swift parameter-free attention block: three Conv3XC (SiLU between), ``(out3 + x) * (sigmoid(out3) - 0.5)``."""

    def __init__(self, channels: int):
        super().__init__()
        self.c1_r = Conv3XC(channels, channels)
        self.c2_r = Conv3XC(channels, channels)
        self.c3_r = Conv3XC(channels, channels)
        self.act1 = nn.SiLU(inplace=True)

    def forward_with_first(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out1 = self.c1_r(x)
        out3 = self.c3_r(self.act1(self.c2_r(self.act1(out1))))
        return (out3 + x) * (torch.sigmoid(out3) - 0.5), out1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_first(x)[0]


class SPAN(SRModel):
    """Swift parameter-free attention network (spandrel hyper-parameters: ``feature_channels`` is
    ``n_feats``, ``upscale`` is ``scale``, ``norm`` and ``img_range``/``rgb_mean``)."""

    arch = "span"

    def __init__(self, scale: int = 4, n_feats: int = 48, norm: bool = True, img_range: float = 255.0,
                 rgb_mean: tuple[float, float, float] = DIV2K_RGB_MEAN):
        super().__init__()
        self.scale = check_scale(scale, (1, 2, 3, 4, 8))
        self.scales = (self.scale,)
        self.n_feats, self.norm, self.img_range = int(n_feats), bool(norm), float(img_range)
        self.rgb_mean = tuple(float(v) for v in rgb_mean)
        if not self.norm:
            self.register_buffer("no_norm", torch.zeros(1))  # spandrel's marker of norm=False
        self.register_buffer("mean", torch.tensor(self.rgb_mean).view(1, 3, 1, 1), persistent=False)
        f = self.n_feats
        self.conv_1 = Conv3XC(3, f)
        for i in range(1, N_BLOCKS + 1):
            self.add_module(f"block_{i}", SPAB(f))
        self.conv_cat = nn.Conv2d(f * 4, f, 1)
        self.conv_2 = Conv3XC(f, f)
        self.upsampler = ColourUpsampler(f, self.scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.norm:
            x = (x - self.mean.to(x.dtype)) * self.img_range
        feat = self.conv_1(x)
        b1 = self.block_1(feat)
        out = b1
        for i in range(2, N_BLOCKS):
            out = getattr(self, f"block_{i}")(out)
        b6, b6_first = self.block_6.forward_with_first(out)
        out = self.conv_cat(torch.cat([feat, self.conv_2(b6), b1, b6_first], 1))
        return self.upsampler(out)


# ----------------------------------------------------------------------------- facts


def _conv3xc_rules(name: str, out: object, inp: object) -> list:
    """A Conv3XC from space ``inp`` to ``out`` (FEAT or RGB): the gain-2 middle follows its side."""
    mid_in = up(2) if inp is FEAT else RGB
    mid_out = up(2) if out is FEAT else RGB
    return [(f"{name}.sk", out, inp), (f"{name}.conv.0", mid_in, inp), (f"{name}.conv.1", mid_out, mid_in),
            (f"{name}.conv.2", out, mid_out), (f"{name}.eval_conv", out, inp)]


def _rules(model: nn.Module) -> list:
    rules = _conv3xc_rules("conv_1", FEAT, RGB)
    for i in range(1, N_BLOCKS + 1):
        for c in ("c1_r", "c2_r", "c3_r"):
            rules += _conv3xc_rules(f"block_{i}.{c}", FEAT, FEAT)
    return rules + [("conv_cat", FEAT, cat(4))] + _conv3xc_rules("conv_2", FEAT, FEAT) + [("upsampler.0", RGB, FEAT)]


def _read_config(sd: dict) -> dict:
    return {"scale": keys.colour_upsampler_scale(sd, "upsampler.0.weight"), "n_feats": sd["conv_1.sk.weight"].shape[0],
            "norm": "no_norm" not in sd, "img_range": 255.0, "rgb_mean": list(DIV2K_RGB_MEAN)}


def _expand_deployed(sd: dict) -> dict:
    """Training branches whose fusion is exactly the released ``eval_conv`` (1x1 identities into
    the first half of the gain-2 middle, the kernel there, zero biases and skip)."""
    out = {k: v for k, v in sd.items() if ".eval_conv." not in k}
    for key in [k for k in sd if k.endswith(".eval_conv.weight")]:
        p = key[: -len("eval_conv.weight")]
        w, b = sd[key], sd[p + "eval_conv.bias"]
        c_out, c_in = w.shape[:2]
        w1 = torch.zeros(2 * c_in, c_in, 1, 1)
        w1[:c_in, :, 0, 0] = torch.eye(c_in)
        w2 = torch.zeros(2 * c_out, 2 * c_in, 3, 3)
        w2[:c_out, :c_in] = w
        b2 = torch.zeros(2 * c_out)
        b2[:c_out] = b
        w3 = torch.zeros(c_out, 2 * c_out, 1, 1)
        w3[:, :c_out, 0, 0] = torch.eye(c_out)
        out.update({p + "conv.0.weight": w1, p + "conv.0.bias": torch.zeros(2 * c_in), p + "conv.1.weight": w2,
                    p + "conv.1.bias": b2, p + "conv.2.weight": w3, p + "conv.2.bias": torch.zeros(c_out),
                    p + "sk.weight": torch.zeros(c_out, c_in, 1, 1), p + "sk.bias": torch.zeros(c_out),
                    p + "eval_conv.weight": w, p + "eval_conv.bias": b})
    return out


#: what spandrel's SPANArch requires (libs/spandrel/spandrel/architectures/SPAN/__init__.py)
SPANDREL_KEYS = ("conv_1.sk.weight", "block_1.c1_r.sk.weight", "block_1.c1_r.eval_conv.weight",
                 "block_1.c3_r.eval_conv.weight", "conv_cat.weight", "conv_2.sk.weight", "conv_2.eval_conv.weight",
                 "upsampler.0.weight")

_NTIRE24 = "https://raw.githubusercontent.com/Amazingren/NTIRE2024_ESR/6404fa48dde4a4adbf241a51debdc661aef20449/model_zoo/"

SPEC = ArchSpec(
    name="span",
    cls=SPAN,
    families=(
        Family("span", {"n_feats": 48}, "SPAN (paper): 6 blocks, 48 features"),
        Family("span-ch28", {"n_feats": 28}, "SPAN 28 features: NTIRE 2024 ESR winner (team38)", (4,)),
        Family("span-ch26", {"n_feats": 26}, "SPAN-tiny 26 features: NTIRE 2024 ESR (team39)", (4,)),
    ),
    formats=(
        Format("spandrel", keys.has_all(*SPANDREL_KEYS)),
        Format("span-deployed", lambda sd: "conv_1.eval_conv.weight" in sd and "conv_1.sk.weight" not in sd
               and "conv_cat.weight" in sd, _expand_deployed),
    ),
    read_config=_read_config,
    upsampler=("upsampler.",),
    taps=lambda m: body_taps("block_", N_BLOCKS, "conv_2", base=1),
    slicing=Slicing(_rules),
    bf16_delta_db={"span-ch28-x4": -0.035, "span-ch26-x4": -0.015},  # Set5, benchmarks/precision_table.py
    weights={
        "span-ch28-x4": ZooEntry("team38_span_ch28_slim.pth", _NTIRE24 + "team38_span_ch28_slim.pth",
                                 sha256="6c80f05048313289c6526e5fc9726688d7bb3dfdd6ae3c8b1e7dd09f601e5971", scale=4),
        "span-ch26-x4": ZooEntry("team39_spantiny_ch26_slim.pth", _NTIRE24 + "team39_spantiny_ch26_slim.pth",
                                 sha256="30bf224aee5d3fb9cbc7a3bf164a294f957f65c45f5b271052947097922040a5", scale=4),
    },
    examples=("span:n_feats=8,scale=2", "span:n_feats=6,scale=4,norm=false"),
    reference="chaiNNer-org/spandrel libs/spandrel/spandrel/architectures/SPAN (hongyuanyu/SPAN)",
)
