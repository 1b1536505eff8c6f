"""Converters from other projects' weight files to srkd ``.safetensors`` model files.

Supported sources (the architecture is detected from key names and tensor shapes):
  * EDSR-PyTorch ``.pt`` state dicts of EDSR, EDSR-baseline and RCAN (official names);
  * BasicSR ``{params|params_ema: state_dict}`` files of EDSR and RCAN (renamed to the official
    names; BasicSR keeps the mean as a constant, so the DIV2K mean and range 255 are used);
  * official CARN / CARN-M files (multi-scale ``up2/up3/up4`` heads: keep all, or one with ``scale``);
  * a plain safetensors state dict with any of the above names.
Legacy pickles are read with ``torch.load(weights_only=True)`` only: no code is executed.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

from ..errors import SrkdError
from ..models.blocks import DIV2K_RGB_MEAN
from ..models.registry import build_model
from .checkpoint import save_model
from .zoo import sha256_file

WRAPPER_KEYS = ("params_ema", "params", "state_dict", "model", "net", "netG")


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a foreign weight file as a flat ``{name: tensor}`` dict, without executing code."""
    path = Path(path)
    if not path.is_file():
        raise SrkdError(f"weight file not found: {path}")
    if path.suffix == ".safetensors":
        from .checkpoint import read_tensors

        return read_tensors(path)[0]
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors come in many types; all mean "not a safe weight file"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SrkdError(f"cannot read {path} as a PyTorch weight file ({first[:200]})") from None
    for key in WRAPPER_KEYS:
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise SrkdError(f"{path} does not hold a state dict of tensors")
    prefix = _common_prefix(list(obj))
    return {k[len(prefix):]: v.float() if v.is_floating_point() else v for k, v in obj.items()}


def _common_prefix(keys: list[str]) -> str:
    for prefix in ("module.", "netG.", "model."):
        if keys and all(k.startswith(prefix) for k in keys):
            return prefix
    return ""


def _count(sd: dict, pattern: str) -> int:
    rx = re.compile(pattern)
    return len({m.group(1) for k in sd if (m := rx.match(k))})


def _pixelshuffle_scale(sd: dict, convs: list[str], n_feats: int) -> int:
    """Scale from the sub-pixel convolutions: each x2 stage outputs 4F channels, x3 outputs 9F."""
    outs = [sd[c].shape[0] for c in convs if c in sd]
    if outs == [9 * n_feats]:
        return 3
    if outs and all(o == 4 * n_feats for o in outs):
        return 2 ** len(outs)
    raise SrkdError(f"cannot infer the scale from upsampler shapes {outs} with {n_feats} features")


def _mean_and_range(sd: dict) -> tuple[float, tuple]:
    """Recover rgb_range from the MeanShift bias (bias = -range * mean, DIV2K mean assumed)."""
    bias = sd.get("sub_mean.bias")
    if bias is None:
        return 255.0, DIV2K_RGB_MEAN
    rng = float(-bias[0] / DIV2K_RGB_MEAN[0])
    for candidate in (255.0, 1.0):
        if abs(rng - candidate) < 1e-3 * candidate:
            return candidate, DIV2K_RGB_MEAN
    return 255.0, tuple(float(-b / 255.0) for b in bias)


def _basicsr_edsr_to_official(sd: dict) -> dict:
    n = _count(sd, r"body\.(\d+)\.conv1\.weight")
    mapping = [(r"^conv_first\.", "head.0."), (r"^body\.(\d+)\.conv1\.", r"body.\1.body.0."),
               (r"^body\.(\d+)\.conv2\.", r"body.\1.body.2."), (r"^conv_after_body\.", f"body.{n}."),
               (r"^upsample\.(\d+)\.", r"tail.0.\1."), (r"^conv_last\.", "tail.1.")]
    return _rename(sd, mapping)


def _basicsr_rcan_to_official(sd: dict) -> dict:
    g = _count(sd, r"body\.(\d+)\.residual_group\.")
    b = _count(sd, r"body\.0\.residual_group\.(\d+)\.")
    mapping = [(r"^conv_first\.", "head.0."),
               (r"^body\.(\d+)\.residual_group\.(\d+)\.rcab\.3\.attention\.1\.", r"body.\1.body.\2.body.3.conv_du.0."),
               (r"^body\.(\d+)\.residual_group\.(\d+)\.rcab\.3\.attention\.3\.", r"body.\1.body.\2.body.3.conv_du.2."),
               (r"^body\.(\d+)\.residual_group\.(\d+)\.rcab\.(\d)\.", r"body.\1.body.\2.body.\3."),
               (r"^body\.(\d+)\.conv\.", rf"body.\1.body.{b}."), (r"^conv_after_body\.", f"body.{g}."),
               (r"^upsample\.(\d+)\.", r"tail.0.\1."), (r"^conv_last\.", "tail.1.")]
    return _rename(sd, mapping)


def _rename(sd: dict, mapping: list[tuple[str, str]]) -> dict:
    out = {}
    for key, value in sd.items():
        for pattern, repl in mapping:
            new, n = re.subn(pattern, repl, key)
            if n:
                out[new] = value
                break
        else:
            raise SrkdError(f"unexpected key '{key}' for this BasicSR architecture")
    return out


def _with_mean_shift(sd: dict, model: nn.Module) -> dict:
    """BasicSR keeps the mean outside the state dict; take the official MeanShift tensors."""
    full = model.state_dict()
    return {**{k: full[k] for k in full if k.startswith(("sub_mean.", "add_mean."))}, **sd}


def detect(sd: dict, arch: str | None = None) -> tuple[str, dict, dict, str]:
    """Return (arch, config, official-named state dict, source format) for a foreign state dict."""
    keys = set(sd)
    if "conv_first.weight" in keys:
        n_feats = sd["conv_first.weight"].shape[0]
        if any(".residual_group." in k for k in keys) and arch in (None, "rcan"):
            off = _basicsr_rcan_to_official(sd)
            return ("rcan", *_rcan_config(off), "basicsr")
        if "body.0.conv1.weight" in keys and arch in (None, "edsr"):
            off = _basicsr_edsr_to_official(sd)
            cfg = _edsr_config(off)
            return "edsr", cfg, off, "basicsr"
        raise SrkdError(f"BasicSR-style file with {n_feats} features but neither EDSR nor RCAN keys")
    if "entry.weight" in keys and "exit.weight" in keys:
        mobile = "b1.b1.body.4.weight" in keys and "b1.b2.body.0.weight" not in keys
        name = "carn-m" if mobile else "carn"
        if arch not in (None, name):
            raise SrkdError(f"the file holds {name} weights, not {arch}")
        return (name, *_carn_config(sd), "carn-pytorch")
    if "head.0.weight" in keys and "tail.1.weight" in keys:
        is_rcan = any(k.endswith("conv_du.0.weight") for k in keys)
        if arch == "rcan" or (arch is None and is_rcan):
            return ("rcan", *_rcan_config(sd), "edsr-pytorch")
        if arch in (None, "edsr"):
            return "edsr", _edsr_config(sd), sd, "edsr-pytorch"
    expected = ("EDSR-PyTorch (head.0/body.N/tail.1), BasicSR (conv_first/conv_last, params[_ema]), "
                "CARN-pytorch (entry/exit/upsample.upN)")
    sample = ", ".join(sorted(keys)[:5])
    hint = f" as {arch}" if arch else ""
    raise SrkdError(f"cannot recognise the weights{hint} (keys like {sample}); expected {expected}")


def _edsr_config(sd: dict) -> dict:
    n_feats = sd["head.0.weight"].shape[0]
    n_resblocks = _count(sd, r"body\.(\d+)\.body\.0\.weight")
    rgb_range, rgb_mean = _mean_and_range(sd)
    scale = _pixelshuffle_scale(sd, sorted(k for k in sd if re.match(r"tail\.0\.\d+\.weight", k)), n_feats)
    # res_scale is not stored in the weights: the paper model (r32f256) uses 0.1, the baseline 1.0.
    res_scale = 0.1 if (n_feats, n_resblocks) == (256, 32) else 1.0
    return {"scale": scale, "n_resblocks": n_resblocks, "n_feats": n_feats, "res_scale": res_scale,
            "rgb_range": rgb_range, "rgb_mean": list(rgb_mean)}


def _rcan_config(sd: dict) -> tuple[dict, dict]:
    n_feats = sd["head.0.weight"].shape[0]
    groups = _count(sd, r"body\.(\d+)\.body\.0\.body\.0\.weight")
    blocks = _count(sd, r"body\.0\.body\.(\d+)\.body\.0\.weight")
    reduction = n_feats // sd["body.0.body.0.body.3.conv_du.0.weight"].shape[0]
    rgb_range, rgb_mean = _mean_and_range(sd)
    scale = _pixelshuffle_scale(sd, sorted(k for k in sd if re.match(r"tail\.0\.\d+\.weight", k)), n_feats)
    cfg = {"scale": scale, "n_resgroups": groups, "n_resblocks": blocks, "n_feats": n_feats,
           "reduction": reduction, "rgb_range": rgb_range, "rgb_mean": list(rgb_mean)}
    return cfg, sd


def _carn_config(sd: dict) -> tuple[dict, dict]:
    n_feats = sd["entry.weight"].shape[0]
    heads = sorted({int(m.group(1)) for k in sd if (m := re.match(r"upsample\.up(\d+)\.", k))})
    if heads:
        scales = heads
        first = sd[f"upsample.up{heads[0]}.body.0.weight"]
    else:
        convs = sorted(k for k in sd if re.match(r"upsample\.up\.body\.\d+\.weight", k))
        scales = [_pixelshuffle_scale(sd, convs, n_feats)]
        first = sd["upsample.up.body.0.weight"]
    group = n_feats // first.shape[1]
    mean = tuple(round(float(v), 6) for v in sd["add_mean.shifter.bias"])
    cfg = {"scale": max(scales), "scales": scales, "n_feats": n_feats, "group": group, "rgb_range": 1.0, "rgb_mean": list(mean)}
    return cfg, sd


def _select_head(arch: str, cfg: dict, sd: dict, scale: int | None) -> tuple[dict, dict]:
    if scale is None:
        return cfg, sd
    scales = cfg.get("scales", [cfg["scale"]])
    if int(scale) not in scales:
        raise SrkdError(f"the weights are for x{', x'.join(map(str, scales))}; x{scale} is not available")
    if arch.startswith("carn") and len(scales) > 1:
        keep = f"upsample.up{scale}."
        sd = {(k.replace(keep, "upsample.up.") if k.startswith(keep) else k): v for k, v in sd.items()
              if not k.startswith("upsample.up") or k.startswith(keep)}
        cfg = {**cfg, "scales": [int(scale)]}
    return {**cfg, "scale": int(scale)}, sd


def convert_state_dict(sd: dict, arch: str | None = None, scale: int | None = None,
                       res_scale: float | None = None) -> tuple[nn.Module, str]:
    """Build the srkd model for a foreign state dict and load it strictly."""
    arch_name, cfg, off, fmt = detect(sd, arch)
    cfg, off = _select_head(arch_name, cfg, off, scale)
    if res_scale is not None:
        if arch_name != "edsr":
            raise SrkdError("--res-scale applies to EDSR only")
        cfg["res_scale"] = float(res_scale)
    model = build_model(arch_name, **cfg)
    if fmt == "basicsr":
        off = _with_mean_shift(off, model)
    try:
        model.load_state_dict(off, strict=True)
    except RuntimeError as exc:
        raise SrkdError(f"weights look like {arch_name} but do not load ({str(exc).splitlines()[0]})") from None
    return model.eval(), fmt


def convert_file(src, dst, arch: str | None = None, scale: int | None = None, res_scale: float | None = None,
                 overwrite: bool = False, source: str | None = None) -> nn.Module:
    """Convert ``src`` to an srkd ``.safetensors`` model file at ``dst`` and return the model."""
    src, dst = Path(src), Path(dst)
    if dst.suffix != ".safetensors":
        raise SrkdError(f"output must end in .safetensors, got {dst.name}")
    if dst.exists() and not overwrite:
        raise SrkdError(f"{dst} already exists; pass --overwrite to replace it")
    model, fmt = convert_state_dict(read_state_dict(src), arch, scale, res_scale)
    provenance = {"converted_from": source or src.name, "source_format": fmt, "source_sha256": sha256_file(src)}
    save_model(model, dst, provenance=provenance, overwrite=overwrite)
    return model
