"""Reading an architecture's configuration back from state-dict key names and shapes."""

from __future__ import annotations

import re

from ..errors import SrkdError
from .blocks import DIV2K_RGB_MEAN


def count(sd: dict, pattern: str) -> int:
    """Number of distinct values of the first group of ``pattern`` over the keys (depths)."""
    rx = re.compile(pattern)
    return len({m.group(1) for k in sd if (m := rx.match(k))})


def has_all(*keys: str):
    """A detector: every key is present (spandrel's ``KeyCondition.has_all``)."""
    return lambda sd: all(k in sd for k in keys)


def pixelshuffle_scale(sd: dict, convs: list[str], n_feats: int) -> int:
    """Scale from the sub-pixel convolutions: each x2 stage outputs 4F channels, x3 outputs 9F."""
    outs = [sd[c].shape[0] for c in convs if c in sd]
    if outs == [9 * n_feats]:
        return 3
    if outs and all(o == 4 * n_feats for o in outs):
        return 2 ** len(outs)
    raise SrkdError(f"cannot infer the scale from upsampler shapes {outs} with {n_feats} features")


def colour_upsampler_scale(sd: dict, key: str, out_channels: int = 3) -> int:
    """Scale of a one-conv colour upsampler (conv to ``3*s*s`` then PixelShuffle(s))."""
    n = sd[key].shape[0]
    s = round((n / out_channels) ** 0.5)
    if s * s * out_channels != n or s < 1:
        raise SrkdError(f"cannot infer the scale from {key} with {n} output channels")
    return s


def mean_and_range(sd: dict, bias_key: str = "sub_mean.bias") -> tuple[float, tuple]:
    """Recover rgb_range from an EDSR-style MeanShift bias (bias = -range * mean, DIV2K mean)."""
    bias = sd.get(bias_key)
    if bias is None:
        return 255.0, DIV2K_RGB_MEAN
    rng = float(-bias[0] / DIV2K_RGB_MEAN[0])
    for candidate in (255.0, 1.0):
        if abs(rng - candidate) < 1e-3 * candidate:
            return candidate, DIV2K_RGB_MEAN
    return 255.0, tuple(float(-b / 255.0) for b in bias)


def rename(sd: dict, mapping: list[tuple[str, str]], what: str) -> dict:
    """Rename keys by the first matching (regex, replacement) pair; an unmatched key is an error."""
    out = {}
    for key, value in sd.items():
        for pattern, repl in mapping:
            new, n = re.subn(pattern, repl, key)
            if n:
                out[new] = value
                break
        else:
            raise SrkdError(f"unexpected key '{key}' for this {what} architecture")
    return out
