"""DCKD's negatives: the LR input degraded (noise, blur, resizing) into the images a student must move away from."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

@dataclass(frozen=True)
class Degradation:
    """How the history model's inputs are degraded (the released config: noise only)."""

    noise_prob: float = 1.0
    sigma_min: float = 1.0  # on the 0-255 scale
    sigma_max: float = 30.0
    gray_prob: float = 0.5
    blur_prob: float = 0.0
    resize_prob: float = 0.0


def _uniform(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand(1, generator=g, device=g.device).item())


def gaussian_noise(x: torch.Tensor, sigma_range=(1.0, 30.0), gray_prob: float = 0.5,
                   generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Add Gaussian noise, clipped to [0, 1]; returns (noisy, sigma per sample, gray per sample).

    Per sample: sigma ~ U[sigma_range] / 255 and, with probability ``gray_prob``, one noise
    map shared by the three channels (BasicSR's ``random_add_gaussian_noise_pt``, clip, no
    rounding).
    """
    b = x.shape[0]
    kw = {"generator": generator, "device": x.device}
    lo, hi = sigma_range
    sigma = (torch.rand(b, **kw) * (hi - lo) + lo) / 255.0
    gray = torch.rand(b, **kw) < gray_prob
    colour = torch.randn(x.shape, **kw)
    mono = torch.randn((b, 1, *x.shape[2:]), **kw).expand_as(colour)
    noise = torch.where(gray.view(-1, 1, 1, 1), mono, colour) * sigma.view(-1, 1, 1, 1)
    return (x.float() + noise).clamp_(0.0, 1.0), sigma, gray


def gaussian_blur(x: torch.Tensor, kernel: tuple[int, int], sigma: tuple[float, float]) -> torch.Tensor:
    """Separable normalised Gaussian blur with reflected borders (kornia ``gaussian_blur2d``)."""
    out = x.float()
    c = x.shape[1]
    for axis, (k, s) in enumerate(zip(kernel, sigma)):
        t = torch.arange(k, dtype=torch.float32, device=x.device) - k // 2
        w = torch.exp(-t.pow(2) / (2 * s * s))
        w = (w / w.sum()).to(out.dtype)
        if axis == 0:  # along the height
            out = F.conv2d(F.pad(out, (0, 0, k // 2, k // 2), mode="reflect"), w.view(1, 1, k, 1).expand(c, 1, k, 1), groups=c)
        else:
            out = F.conv2d(F.pad(out, (k // 2, k // 2, 0, 0), mode="reflect"), w.view(1, 1, 1, k).expand(c, 1, 1, k), groups=c)
    return out


def _resize(x: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    return F.interpolate(x, size=size, mode=mode, align_corners=None if mode == "area" else False)


def degrade(lr: torch.Tensor, deg: Degradation, generator: torch.Generator) -> torch.Tensor:
    """One degraded copy of the LR batch, in the released code's order: blur, resize, noise,
    resize back. Blur and resize parameters are drawn once per copy, noise per sample."""
    g = generator
    x = lr.float()
    h, w = x.shape[-2:]
    modes = ("area", "bilinear", "bicubic")
    if deg.blur_prob > 0 and _uniform(g, 0, 1) < deg.blur_prob:
        k = tuple(2 * int(torch.randint(1, 6, (1,), generator=g, device=g.device).item()) + 1 for _ in range(2))  # 3..11
        s = (_uniform(g, 0.1, 2.0), _uniform(g, 0.1, 2.0))
        x = gaussian_blur(x, k, s)
    scale = 1.0
    if deg.resize_prob > 0 and _uniform(g, 0, 1) < deg.resize_prob:
        scale = _uniform(g, 1.0, 1.5) if _uniform(g, 0, 1) < 0.25 else _uniform(g, 0.5, 1.0)
        mode = modes[int(torch.randint(0, 3, (1,), generator=g, device=g.device).item())]
        x = _resize(x, (max(1, int(h * scale)), max(1, int(w * scale))), mode)
    if deg.noise_prob > 0 and _uniform(g, 0, 1) < deg.noise_prob:
        x = gaussian_noise(x, (deg.sigma_min, deg.sigma_max), deg.gray_prob, g)[0]
    if scale != 1.0:
        x = _resize(x, (h, w), modes[int(torch.randint(0, 3, (1,), generator=g, device=g.device).item())])
    return x.to(lr.dtype)


def negative_inputs(lr: torch.Tensor, n: int, include_clean: bool, deg: Degradation,
                    generator: torch.Generator) -> list[torch.Tensor]:
    """The history model's ``n`` inputs: the LR batch itself (when ``include_clean``) then
    degraded copies (the released code: the clean LR plus ``num_neg`` = 4 noisy ones)."""
    out = [lr] if include_clean and n > 0 else []
    while len(out) < n:
        out.append(degrade(lr, deg, generator))
    return out
