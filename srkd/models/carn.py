"""CARN and CARN-M (Ahn et al., ECCV 2018) with nmhkahn/CARN-pytorch's module names.

Cascading residual network: three cascading blocks, each with three residual units whose outputs
are concatenated and fused by 1x1 convolutions, and the same cascade again at the global level.
CARN-M replaces the residual units by one *shared* efficient residual block (grouped 3x3, grouped
3x3, 1x1) applied three times, and groups the upsampler convolutions.

The official checkpoints are multi-scale (one file with ``upsample.up2/up3/up4`` heads);
``scales=(2, 3, 4)`` builds that layout, a single scale builds ``upsample.up``.
Official weights expect inputs in [0, 1]; the mean shift is a nested ``shifter`` convolution.
"""

from __future__ import annotations

import math
import re

import torch
from torch import nn

from . import keys
from .blocks import DIV2K_RGB_MEAN, check_scale
from .spec import FEAT, RGB, ArchSpec, Family, Format, Slicing, SRModel, ZooEntry, cat, upsampler_rules


class MeanShift(nn.Module):
    def __init__(self, mean_rgb, sub: bool):
        super().__init__()
        sign = -1.0 if sub else 1.0
        self.shifter = nn.Conv2d(3, 3, 1, 1, 0)
        self.shifter.weight.data = torch.eye(3).view(3, 3, 1, 1)
        self.shifter.bias.data = sign * torch.tensor(mean_rgb, dtype=torch.float32)
        for p in self.shifter.parameters():
            p.requires_grad = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shifter(x)


class BasicBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, ksize: int = 3, stride: int = 1, pad: int = 1):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(in_channels, out_channels, ksize, stride, pad), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class ResidualBlock(nn.Module):
    post_residual_relu = True  # forward is relu(body(x) + x): srkd.infer.fusion may run it as one call

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, 1, 1), nn.ReLU(inplace=True), nn.Conv2d(channels, channels, 3, 1, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + x)


class EResidualBlock(nn.Module):
    post_residual_relu = True  # forward is relu(body(x) + x): srkd.infer.fusion may run it as one call

    def __init__(self, channels: int, group: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, 1, 1, groups=group),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, 1, 1, groups=group),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 1, 1, 0),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + x)


class _UpsampleBlock(nn.Module):
    """conv, ReLU, PixelShuffle per x2 stage (note the ReLU, unlike EDSR), or one x3 stage."""

    def __init__(self, channels: int, scale: int, group: int):
        super().__init__()
        layers: list[nn.Module] = []
        if scale in (2, 4, 8):
            for _ in range(int(math.log2(scale))):
                layers += [nn.Conv2d(channels, 4 * channels, 3, 1, 1, groups=group), nn.ReLU(inplace=True)]
                layers += [nn.PixelShuffle(2)]
        elif scale == 3:
            layers += [nn.Conv2d(channels, 9 * channels, 3, 1, 1, groups=group), nn.ReLU(inplace=True)]
            layers += [nn.PixelShuffle(3)]
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class UpsampleBlock(nn.Module):
    def __init__(self, channels: int, scales: tuple[int, ...], group: int):
        super().__init__()
        self.multi_scale = len(scales) > 1
        if self.multi_scale:
            for s in scales:
                self.add_module(f"up{s}", _UpsampleBlock(channels, s, group))
        else:
            self.up = _UpsampleBlock(channels, scales[0], group)

    def forward(self, x: torch.Tensor, scale: int) -> torch.Tensor:
        return getattr(self, f"up{scale}")(x) if self.multi_scale else self.up(x)


class Cascade(nn.Module):
    """The cascading connection: ``out_k = fuse_k(cat(x, unit_1(out_0), ..., unit_k(out_{k-1})))``
    with ``out_0 = x``; returns the last ``out_k``.

    It has no parameters: its owner registers the units and fuses under their official names, and
    they are looked up by name at each call, so that rewrites of them (srkd.infer.fusion) apply here
    too. It names the pattern so that srkd.infer.fusion can run it without the concatenations.
    """

    def __init__(self, owner: nn.Module, units: tuple[str, ...], fuses: tuple[str, ...]):
        super().__init__()
        self.__dict__["owner"] = owner  # not registered: the owner holds this module
        self.unit_names, self.fuse_names = tuple(units), tuple(fuses)

    @property
    def units(self) -> tuple[nn.Module, ...]:
        return tuple(getattr(self.owner, n) for n in self.unit_names)

    @property
    def fuses(self) -> tuple[nn.Module, ...]:
        return tuple(getattr(self.owner, n) for n in self.fuse_names)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cat, out = x, x
        for unit, fuse in zip(self.units, self.fuses):
            cat = torch.cat([cat, unit(out)], dim=1)
            out = fuse(cat)
        return out


class CascadingBlock(nn.Module):
    """Local cascade. CARN: three residual units b1..b3. CARN-M: one shared unit b1 used three times."""

    def __init__(self, channels: int, mobile: bool, group: int):
        super().__init__()
        self.mobile = mobile
        if mobile:
            self.b1 = EResidualBlock(channels, group)
        else:
            self.b1, self.b2, self.b3 = (ResidualBlock(channels) for _ in range(3))
        self.c1 = BasicBlock(channels * 2, channels, 1, 1, 0)
        self.c2 = BasicBlock(channels * 3, channels, 1, 1, 0)
        self.c3 = BasicBlock(channels * 4, channels, 1, 1, 0)
        units = ("b1", "b1", "b1") if mobile else ("b1", "b2", "b3")
        self.cascade = Cascade(self, units, ("c1", "c2", "c3"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cascade(x)


class CARN(SRModel):
    """Cascading residual network. ``scales`` lists the upsampling heads; ``scale`` is the active one."""

    arch = "carn"
    mobile = False

    def __init__(
        self,
        scale: int = 4,
        scales: tuple[int, ...] | None = None,
        n_feats: int = 64,
        group: int = 1,
        rgb_range: float = 1.0,
        rgb_mean: tuple[float, float, float] = DIV2K_RGB_MEAN,
    ):
        super().__init__()
        self.scales = tuple(sorted(check_scale(s) for s in (scales or (scale,))))
        self.scale = check_scale(scale)
        if self.scale not in self.scales:
            raise ValueError(f"scale {scale} is not among the model's scales {self.scales}")
        self.n_feats, self.group = int(n_feats), int(group)
        self.rgb_range, self.rgb_mean = float(rgb_range), tuple(float(v) for v in rgb_mean)

        c = self.n_feats
        self.sub_mean = MeanShift(self.rgb_mean, sub=True)
        self.add_mean = MeanShift(self.rgb_mean, sub=False)
        self.entry = nn.Conv2d(3, c, 3, 1, 1)
        self.b1, self.b2, self.b3 = (CascadingBlock(c, self.mobile, self.group) for _ in range(3))
        self.c1 = BasicBlock(c * 2, c, 1, 1, 0)
        self.c2 = BasicBlock(c * 3, c, 1, 1, 0)
        self.c3 = BasicBlock(c * 4, c, 1, 1, 0)
        self.upsample = UpsampleBlock(c, self.scales, self.group)
        self.exit = nn.Conv2d(c, 3, 3, 1, 1)
        self.cascade = Cascade(self, ("b1", "b2", "b3"), ("c1", "c2", "c3"))

    def set_scale(self, scale: int) -> None:
        if scale not in self.scales:
            raise ValueError(f"this {self.arch} model has heads for x{', x'.join(map(str, self.scales))}, not x{scale}")
        self.scale = int(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.entry(self.sub_mean(x if self.rgb_range == 1.0 else x * self.rgb_range))
        out = self.exit(self.upsample(self.cascade(x), self.scale))
        out = self.add_mean(out)
        return out if self.rgb_range == 1.0 else out / self.rgb_range  # the official weights use 1: skip a pass


class CARNM(CARN):
    """CARN-M: shared efficient residual unit per block, grouped convolutions (group 4)."""

    arch = "carn-m"
    mobile = True

    def __init__(self, scale: int = 4, scales=None, n_feats: int = 64, group: int = 4, rgb_range: float = 1.0,
                 rgb_mean=DIV2K_RGB_MEAN):
        super().__init__(scale, scales, n_feats, group, rgb_range, rgb_mean)


# ----------------------------------------------------------------------------- facts


def _rules(model: nn.Module) -> list:
    rules = [("entry", FEAT, RGB)]
    for name, module in model.named_modules():
        if not isinstance(module, nn.Conv2d):
            continue
        fuse = re.fullmatch(r"(?:b\d\.)?c(\d)\.body\.0", name)
        if fuse:
            rules.append((name, FEAT, cat(int(fuse[1]) + 1)))
        elif re.fullmatch(r"b\d\.b\d\.body\.\d", name):
            rules.append((name, FEAT, FEAT))
    for head in [n for n, _ in model.upsample.named_children()]:
        rules += upsampler_rules(model, f"upsample.{head}.body")
    rules.append(("exit", RGB, FEAT))
    return rules


def _read_config(sd: dict) -> dict:
    n_feats = sd["entry.weight"].shape[0]
    heads = sorted({int(m.group(1)) for k in sd if (m := re.match(r"upsample\.up(\d+)\.", k))})
    if heads:
        scales = heads
        first = sd[f"upsample.up{heads[0]}.body.0.weight"]
    else:
        convs = sorted(k for k in sd if re.match(r"upsample\.up\.body\.\d+\.weight", k))
        scales = [keys.pixelshuffle_scale(sd, convs, n_feats)]
        first = sd["upsample.up.body.0.weight"]
    mean = tuple(round(float(v), 6) for v in sd["add_mean.shifter.bias"])
    return {"scale": max(scales), "scales": scales, "n_feats": n_feats, "group": n_feats // first.shape[1],
            "rgb_range": 1.0, "rgb_mean": list(mean)}


def _is_mobile(sd: dict) -> bool:
    return "b1.b1.body.4.weight" in sd and "b1.b2.body.0.weight" not in sd


def _carn_file(sd: dict) -> bool:
    return "entry.weight" in sd and "exit.weight" in sd


_CARN_URL = "https://raw.githubusercontent.com/nmhkahn/CARN-pytorch/40d3514f81cccd680d846cd5ab07af35f2c8e0e2/checkpoint/carn.pth"
_TAPS = {"body1": "c1", "body2": "c2", "body3": "c3"}  # the three global cascade fuses

SPEC = ArchSpec(
    name="carn",
    cls=CARN,
    families=(Family("carn", {}, "CARN: cascading residual network"),),
    formats=(Format("carn-pytorch", lambda sd: _carn_file(sd) and not _is_mobile(sd)),),
    read_config=_read_config,
    upsampler=("upsample.",),
    taps=lambda m: dict(_TAPS),
    slicing=Slicing(_rules, groups="group"),
    weights={f"carn-x{s}": ZooEntry("carn.pth", _CARN_URL, scale=s) for s in (2, 3, 4)},
    examples=("carn:n_feats=8,scale=2",),
    reference="nmhkahn/CARN-pytorch carn/model/carn.py",
)

SPEC_M = ArchSpec(
    name="carn-m",
    cls=CARNM,
    families=(Family("carn-m", {}, "CARN-M: mobile CARN, grouped convs"),),
    formats=(Format("carn-pytorch", lambda sd: _carn_file(sd) and _is_mobile(sd)),),
    read_config=_read_config,
    upsampler=("upsample.",),
    taps=lambda m: dict(_TAPS),
    slicing=Slicing(_rules, groups="group"),
    bf16_delta_db={"carn-m-x2": -0.021, "carn-m-x3": -0.004, "carn-m-x4": -0.006},  # Set5, benchmarks/precision_table.py
    weights={f"carn-m-x{s}": ZooEntry("carn-m.safetensors", None, scale=s, bundled=True) for s in (2, 3, 4)},
    examples=("carn-m:n_feats=8,group=4,scale=4", "carn-m:n_feats=8,scales=[2,3,4],scale=3"),
    reference="nmhkahn/CARN-pytorch carn/model/carn_m.py",
)
