"""RCAN (Zhang et al., ECCV 2018) with EDSR-PyTorch / yulunzhang/RCAN module names.

Residual-in-residual: ``n_resgroups`` groups of ``n_resblocks`` residual channel-attention blocks
(RCAB), each group closed by a convolution and a skip, the trunk closed by another.
"""

from __future__ import annotations

import torch
from torch import nn

from . import keys
from .blocks import DIV2K_RGB_MEAN, MeanShift, Upsampler, check_scale, default_conv
from .edsr import head_body_tail_rules, mean_shift_tensors, tail_scale
from .spec import ArchSpec, Family, Format, Slicing, SRModel, ZooEntry, body_taps


class CALayer(nn.Module):
    """Channel attention: global average pool, 1x1 squeeze (C/r), ReLU, 1x1 excite, sigmoid."""

    def __init__(self, channel: int, reduction: int = 16):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.conv_du = nn.Sequential(
            nn.Conv2d(channel, channel // reduction, 1, padding=0, bias=True),
            nn.ReLU(inplace=True),
            nn.Conv2d(channel // reduction, channel, 1, padding=0, bias=True),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.conv_du(self.avg_pool(x))


class RCAB(nn.Module):
    """conv-ReLU-conv-CA with an unscaled identity skip (the official code ignores res_scale)."""

    def __init__(self, n_feat: int, reduction: int):
        super().__init__()
        self.body = nn.Sequential(
            default_conv(n_feat, n_feat, 3), nn.ReLU(True), default_conv(n_feat, n_feat, 3), CALayer(n_feat, reduction)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + x


class ResidualGroup(nn.Module):
    def __init__(self, n_feat: int, reduction: int, n_resblocks: int):
        super().__init__()
        self.body = nn.Sequential(*[RCAB(n_feat, reduction) for _ in range(n_resblocks)], default_conv(n_feat, n_feat, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + x


class RCAN(SRModel):
    """Residual channel attention network (paper: 10 groups x 20 RCAB, 64 features, reduction 16)."""

    arch = "rcan"

    def __init__(
        self,
        scale: int = 4,
        n_resgroups: int = 10,
        n_resblocks: int = 20,
        n_feats: int = 64,
        reduction: int = 16,
        rgb_range: float = 255.0,
        rgb_mean: tuple[float, float, float] = DIV2K_RGB_MEAN,
    ):
        super().__init__()
        self.scale = check_scale(scale)
        self.scales = (self.scale,)
        self.n_resgroups, self.n_resblocks = int(n_resgroups), int(n_resblocks)
        self.n_feats, self.reduction = int(n_feats), int(reduction)
        if self.n_feats // self.reduction < 1:
            raise ValueError(f"n_feats ({n_feats}) must be at least reduction ({reduction})")
        self.rgb_range, self.rgb_mean = float(rgb_range), tuple(float(v) for v in rgb_mean)

        self.sub_mean = MeanShift(self.rgb_range, self.rgb_mean, sign=-1)
        self.add_mean = MeanShift(self.rgb_range, self.rgb_mean, sign=1)
        self.head = nn.Sequential(default_conv(3, n_feats, 3))
        self.body = nn.Sequential(
            *[ResidualGroup(n_feats, reduction, n_resblocks) for _ in range(n_resgroups)],
            default_conv(n_feats, n_feats, 3),
        )
        self.tail = nn.Sequential(Upsampler(self.scale, n_feats), default_conv(n_feats, 3, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.sub_mean(x * self.rgb_range)
        x = self.head(x)
        x = self.body(x) + x
        x = self.tail(x)
        return self.add_mean(x) / self.rgb_range


# ----------------------------------------------------------------------------- facts


def _read_config(sd: dict) -> dict:
    n_feats = sd["head.0.weight"].shape[0]
    rgb_range, rgb_mean = keys.mean_and_range(sd)
    return {"scale": tail_scale(sd, n_feats), "n_resgroups": keys.count(sd, r"body\.(\d+)\.body\.0\.body\.0\.weight"),
            "n_resblocks": keys.count(sd, r"body\.0\.body\.(\d+)\.body\.0\.weight"), "n_feats": n_feats,
            "reduction": n_feats // sd["body.0.body.0.body.3.conv_du.0.weight"].shape[0],
            "rgb_range": rgb_range, "rgb_mean": list(rgb_mean)}


def _from_basicsr(sd: dict) -> dict:
    g = keys.count(sd, r"body\.(\d+)\.residual_group\.")
    b = keys.count(sd, r"body\.0\.residual_group\.(\d+)\.")
    mapping = [(r"^conv_first\.", "head.0."),
               (r"^body\.(\d+)\.residual_group\.(\d+)\.rcab\.3\.attention\.1\.", r"body.\1.body.\2.body.3.conv_du.0."),
               (r"^body\.(\d+)\.residual_group\.(\d+)\.rcab\.3\.attention\.3\.", r"body.\1.body.\2.body.3.conv_du.2."),
               (r"^body\.(\d+)\.residual_group\.(\d+)\.rcab\.(\d)\.", r"body.\1.body.\2.body.\3."),
               (r"^body\.(\d+)\.conv\.", rf"body.\1.body.{b}."), (r"^conv_after_body\.", f"body.{g}."),
               (r"^upsample\.(\d+)\.", r"tail.0.\1."), (r"^conv_last\.", "tail.1.")]
    return {**mean_shift_tensors(), **keys.rename(sd, mapping, "BasicSR RCAN")}


def _slice_config(config: dict, n: int) -> dict:
    # A plain RCAN squeezes to n // reduction channels; with reduction = n that is the one channel
    # the slimmable forward keeps when n < reduction.
    return {**config, "n_feats": n, **({"reduction": n} if n < config["reduction"] else {})}


_RCAN_HELP = (
    "the official RCAN weights (RCAN_BIX{s}.pt) are only on Google Drive/Dropbox (see yulunzhang/RCAN's README); "
    "download the file, then: srkd convert RCAN_BIX{s}.pt -o rcan-x{s}.safetensors and pass that path"
)

SPEC = ArchSpec(
    name="rcan",
    cls=RCAN,
    families=(Family("rcan", {"n_resgroups": 10, "n_resblocks": 20, "n_feats": 64, "reduction": 16}, "RCAN: 10 groups x 20 RCAB"),),
    formats=(
        Format("edsr-pytorch", lambda sd: "head.0.weight" in sd and "tail.1.weight" in sd
               and any(k.endswith("conv_du.0.weight") for k in sd)),
        Format("basicsr", lambda sd: "conv_first.weight" in sd and any(".rcab." in k for k in sd), _from_basicsr),
    ),
    read_config=_read_config,
    upsampler=("tail.",),
    # FAKD taps groups 2 and 6 of 10 (after the 3rd and 7th): body2 is 2n//3, not 2n//3 - 1.
    taps=lambda m: body_taps("body.", m.n_resgroups, f"body.{m.n_resgroups}", second=2 * m.n_resgroups // 3),
    slicing=Slicing(head_body_tail_rules, reduction="reduction", config=_slice_config),
    context="global",  # channel attention pools over the whole input
    supports_fp16=True,
    weights={f"rcan-x{s}": ZooEntry(f"RCAN_BIX{s}.pt", None, scale=s, how_to_get=_RCAN_HELP.format(s=s)) for s in (2, 3, 4)},
    examples=("rcan:n_resgroups=2,n_resblocks=2,n_feats=16,reduction=4,scale=4",),
    reference="yulunzhang/RCAN RCAN_TrainCode/code/model/rcan.py (EDSR-PyTorch names)",
)
