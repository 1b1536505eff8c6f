"""Benchmark evaluation with the field's protocol (ecosystem.md §A; docs/protocol.md).

MATLAB-bicubic LR (official files when present) -> model -> quantize to uint8 -> BT.601 Y in float
-> shave ``scale`` pixels -> PSNR (peak 255) and SSIM (11x11 Gaussian, sigma 1.5, 'valid') per
image -> mean over images. Self-ensemble results are labelled with a "+".
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .data.benchmarks import Benchmark, folder_benchmark, open_benchmark
from .errors import SrkdError
from .infer import Upscaler
from .io.checkpoint import ModelFile
from .metrics import psnr, quantize, ssim

BUNDLED_DATA = Path(__file__).resolve().parent / "assets"


@dataclass
class ImageResult:
    name: str
    psnr: float
    ssim: float


@dataclass
class DatasetResult:
    dataset: str
    scale: int
    n_images: int
    psnr: float
    ssim: float
    seconds: float
    metric: str = "y"
    self_ensemble: bool = False
    images: list[ImageResult] = field(default_factory=list)

    @property
    def label(self) -> str:
        return self.dataset + ("+" if self.self_ensemble else "")

    def to_dict(self, per_image: bool = False) -> dict:
        d = asdict(self)
        if not per_image:
            d.pop("images")
        d["label"] = self.label
        return d


def open_dataset(name: str, scale: int, data_root=None) -> Benchmark:
    """A named benchmark; Set5 falls back to the copy bundled with the package."""
    try:
        return open_benchmark(name, scale, data_root)
    except SrkdError:
        if name.lower() == "set5" and scale in (2, 3, 4):
            return open_benchmark("set5", scale, BUNDLED_DATA)
        raise


def _as_module(model, scale: int | None) -> nn.Module:
    if isinstance(model, ModelFile):
        model = model.model
    if isinstance(model, (str, type(None))):
        from .io.hub import load_model

        return load_model(model, scale=scale).model
    if scale is not None and scale != model.scale:
        if scale not in model.scales:
            raise SrkdError(f"the model is x{model.scale}; it cannot be evaluated at x{scale}")
        model.set_scale(scale)
    return model


def evaluate(
    model,
    datasets=("set5",),
    scale: int | None = None,
    data_root=None,
    device: str = "auto",
    precision: str = "fp32",
    self_ensemble: bool = False,
    tile: int | None = None,
    metric: str = "y",
    save_images=None,
    hr_dir=None,
    lr_dir=None,
    progress: bool = True,
    backend: str = "torch",
) -> list[DatasetResult]:
    """Evaluate ``model`` (module, ModelFile or reference) on named benchmarks or an HR[/LR] folder."""
    if metric not in ("y", "rgb"):
        raise SrkdError(f"--metric must be 'y' or 'rgb', got '{metric}'")
    net = _as_module(model, scale)
    scale = net.scale
    benches = [open_dataset(n, scale, data_root) for n in datasets]
    if hr_dir is not None:
        benches.append(folder_benchmark(hr_dir, scale, lr_dir=lr_dir))
    if not benches:
        raise SrkdError("nothing to evaluate: give --dataset NAME or --hr DIR")
    upscaler = Upscaler(net, device=device, precision=precision, tile=tile, backend=backend)
    results = []
    from rich.progress import Progress

    with Progress(*Progress.get_default_columns(), disable=not progress, transient=True) as bar:
        for bench in benches:
            task = bar.add_task(f"{bench.name} x{scale}", total=len(bench))
            scores: list[ImageResult] = []
            start = time.perf_counter()
            for sample in bench:
                sr = sr_image(upscaler, sample.lr, self_ensemble)
                if sr.shape != sample.hr.shape:
                    raise SrkdError(f"{bench.name}/{sample.name}: output {sr.shape} does not match HR {sample.hr.shape}")
                y = metric == "y"
                scores.append(ImageResult(sample.name, psnr(sr, sample.hr, scale, y=y), ssim(sr, sample.hr, scale, y=y)))
                if save_images is not None:
                    from .io.images import write_image

                    write_image(Path(save_images) / bench.name / f"{sample.name}.png", sr, overwrite=True)
                bar.advance(task)
            seconds = time.perf_counter() - start
            results.append(
                DatasetResult(
                    bench.name, scale, len(scores), float(np.mean([s.psnr for s in scores])),
                    float(np.mean([s.ssim for s in scores])), seconds, metric, self_ensemble, scores,
                )
            )
    return results


def sr_image(upscaler: Upscaler, lr: np.ndarray, self_ensemble: bool = False) -> np.ndarray:
    """uint8 HxWx3 LR -> quantized uint8 SR image."""
    x = torch.from_numpy(lr.astype(np.float32)).permute(2, 0, 1).unsqueeze(0).div_(255)  # astype copies: safe for read-only arrays
    out = upscaler.process(x, self_ensemble=self_ensemble)
    return quantize(out[0])


def bicubic_upscale(lr: np.ndarray, scale: int) -> np.ndarray:
    """MATLAB ``imresize(lr, scale, 'bicubic')`` of a uint8 image, rounded per pass as MATLAB does."""
    from .data.resize import imresize

    t = torch.from_numpy(lr.astype(np.float64)).permute(2, 0, 1)
    return imresize(t, scale, round_between=True).permute(1, 2, 0).numpy().astype(np.uint8)


def evaluate_bicubic(datasets=("set5",), scale: int = 4, data_root=None) -> list[DatasetResult]:
    """The bicubic baseline under the same protocol (the table in docs/protocol.md)."""
    results = []
    for name in datasets:
        bench = open_dataset(name, scale, data_root)
        start, scores = time.perf_counter(), []
        for sample in bench:
            sr = bicubic_upscale(sample.lr, scale)
            scores.append(ImageResult(sample.name, psnr(sr, sample.hr, scale), ssim(sr, sample.hr, scale)))
        results.append(DatasetResult(bench.name, scale, len(scores), float(np.mean([s.psnr for s in scores])),
                                     float(np.mean([s.ssim for s in scores])), time.perf_counter() - start,
                                     images=scores))
    return results


from ._callable import make_callable  # noqa: E402

make_callable(__name__, evaluate)  # srkd.evaluate(model, datasets) is evaluate() above
