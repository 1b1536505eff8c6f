"""EDSR (Lim et al., CVPRW 2017) with EDSR-PyTorch's module names.

Paper model: 32 residual blocks, 256 features, residual scaling 0.1. "Baseline": 16, 64, 1.0.
Official ``edsr*_x{2,3,4}-*.pt`` files load with ``strict=True``; BasicSR files are renamed.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from . import keys
from .blocks import DIV2K_RGB_MEAN, MeanShift, ResBlock, Upsampler, check_scale, default_conv
from .spec import FEAT, RGB, SQUEEZE, ArchSpec, Family, Format, Slicing, SRModel, ZooEntry, body_taps, upsampler_rules


class EDSR(SRModel):
    """Enhanced deep residual network.

    Parameters
    ----------
    scale: upscaling factor (2, 3, 4 or 8).
    n_resblocks, n_feats, res_scale: depth, width and residual scaling of the trunk.
    rgb_range: the value range the weights expect (255 for the official weights); inputs and
        outputs of ``forward`` are always in [0, 1], the range is applied inside.
    rgb_mean: mean subtracted by ``sub_mean`` (DIV2K mean by default).
    """

    arch = "edsr"

    def __init__(
        self,
        scale: int = 4,
        n_resblocks: int = 16,
        n_feats: int = 64,
        res_scale: float = 1.0,
        rgb_range: float = 255.0,
        rgb_mean: tuple[float, float, float] = DIV2K_RGB_MEAN,
    ):
        super().__init__()
        self.scale = check_scale(scale)
        self.scales = (self.scale,)
        self.n_resblocks, self.n_feats, self.res_scale = int(n_resblocks), int(n_feats), float(res_scale)
        self.rgb_range, self.rgb_mean = float(rgb_range), tuple(float(v) for v in rgb_mean)

        self.sub_mean = MeanShift(self.rgb_range, self.rgb_mean, sign=-1)
        self.add_mean = MeanShift(self.rgb_range, self.rgb_mean, sign=1)
        self.head = nn.Sequential(default_conv(3, n_feats, 3))
        self.body = nn.Sequential(
            *[ResBlock(n_feats, 3, res_scale) for _ in range(n_resblocks)], default_conv(n_feats, n_feats, 3)
        )
        self.tail = nn.Sequential(Upsampler(self.scale, n_feats), default_conv(n_feats, 3, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.sub_mean(x * self.rgb_range)
        x = self.head(x)
        x = self.body(x) + x
        x = self.tail(x)
        return self.add_mean(x) / self.rgb_range


# ----------------------------------------------------------------------------- facts


def head_body_tail_rules(model: nn.Module) -> list:
    """EDSR and RCAN: head -> body (features; RCAN's squeezes) -> sub-pixel tail -> colour."""
    rules = [("head.0", FEAT, RGB)]
    for name, module in model.named_modules():
        if not isinstance(module, nn.Conv2d) or not name.startswith("body."):
            continue
        if name.endswith("conv_du.0"):
            rules.append((name, SQUEEZE, FEAT))
        elif name.endswith("conv_du.2"):
            rules.append((name, FEAT, SQUEEZE))
        else:
            rules.append((name, FEAT, FEAT))
    rules += upsampler_rules(model, "tail.0")
    rules.append(("tail.1", RGB, FEAT))
    return rules


def tail_scale(sd: dict, n_feats: int) -> int:
    return keys.pixelshuffle_scale(sd, sorted(k for k in sd if re.match(r"tail\.0\.\d+\.weight", k)), n_feats)


def mean_shift_tensors(rgb_range: float = 255.0) -> dict:
    """The official MeanShift tensors (BasicSR keeps the mean outside the state dict)."""
    out = {}
    for name, sign in (("sub_mean", -1), ("add_mean", 1)):
        for k, v in MeanShift(rgb_range, DIV2K_RGB_MEAN, sign=sign).state_dict().items():
            out[f"{name}.{k}"] = v
    return out


def _read_config(sd: dict) -> dict:
    n_feats = sd["head.0.weight"].shape[0]
    n_resblocks = keys.count(sd, r"body\.(\d+)\.body\.0\.weight")
    rgb_range, rgb_mean = keys.mean_and_range(sd)
    # res_scale is not stored in the weights: the paper model (r32f256) uses 0.1, the baseline 1.0.
    res_scale = 0.1 if (n_feats, n_resblocks) == (256, 32) else 1.0
    return {"scale": tail_scale(sd, n_feats), "n_resblocks": n_resblocks, "n_feats": n_feats, "res_scale": res_scale,
            "rgb_range": rgb_range, "rgb_mean": list(rgb_mean)}


def _from_basicsr(sd: dict) -> dict:
    n = keys.count(sd, r"body\.(\d+)\.conv1\.weight")
    mapping = [(r"^conv_first\.", "head.0."), (r"^body\.(\d+)\.conv1\.", r"body.\1.body.0."),
               (r"^body\.(\d+)\.conv2\.", r"body.\1.body.2."), (r"^conv_after_body\.", f"body.{n}."),
               (r"^upsample\.(\d+)\.", r"tail.0.\1."), (r"^conv_last\.", "tail.1.")]
    return {**mean_shift_tensors(), **keys.rename(sd, mapping, "BasicSR EDSR")}


EDSR_URL = "https://cv.snu.ac.kr/research/EDSR/models/"


def _zoo(name: str, sha256: str | None = None) -> ZooEntry:
    return ZooEntry(name, EDSR_URL + name, sha256=sha256, hash_prefix=name.rsplit("-", 1)[1].split(".")[0])


SPEC = ArchSpec(
    name="edsr",
    cls=EDSR,
    families=(
        Family("edsr", {"n_resblocks": 32, "n_feats": 256, "res_scale": 0.1}, "EDSR (paper): 32 blocks, 256 features"),
        Family("edsr-baseline", {"n_resblocks": 16, "n_feats": 64, "res_scale": 1.0}, "EDSR-baseline: 16 blocks, 64 features"),
    ),
    formats=(
        Format("edsr-pytorch", lambda sd: "head.0.weight" in sd and "tail.1.weight" in sd
               and not any(k.endswith("conv_du.0.weight") for k in sd)),
        Format("basicsr", lambda sd: "conv_first.weight" in sd and "body.0.conv1.weight" in sd, _from_basicsr),
    ),
    read_config=_read_config,
    upsampler=("tail.",),
    taps=lambda m: body_taps("body.", m.n_resblocks, f"body.{m.n_resblocks}"),
    slicing=Slicing(head_body_tail_rules),
    bf16_delta_db={"edsr-baseline-x4": -0.003},  # Set5, the bundled demo teacher; benchmarks/precision_table.py
    weights={
        "edsr-baseline-x2": _zoo("edsr_baseline_x2-1bc95232.pt", "1bc9523228fdc3b0a5ddb0d7062001e22b31bbb398ae09cfdefb97e8ee06e171"),
        "edsr-baseline-x3": _zoo("edsr_baseline_x3-abf2a44e.pt", "abf2a44e7a137228efa42a4264a23e12603168d43ac7596b1adef40c649b9240"),
        "edsr-baseline-x4": _zoo("edsr_baseline_x4-6b446fab.pt", "6b446fab734f4de74448d2fd1f3f990f5bae726e49dc7eff2ae9cefe444a1723"),
        "edsr-x2": _zoo("edsr_x2-0edfb8a3.pt"),
        "edsr-x3": _zoo("edsr_x3-ea3ef2c6.pt"),
        "edsr-x4": _zoo("edsr_x4-4f62e9ef.pt"),
    },
    examples=("edsr:n_resblocks=2,n_feats=8,scale=2", "edsr:n_resblocks=3,n_feats=8,res_scale=0.1,scale=3"),
    reference="sanghyun-son/EDSR-PyTorch src/model/edsr.py",
)
