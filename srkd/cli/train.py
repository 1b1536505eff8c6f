"""``srkd teacher-train``: supervised training of any architecture with the shared engine."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import typer

from ..train.config import TrainConfig

_D = TrainConfig()


def _dflt(value) -> str:
    if isinstance(value, list):
        return ",".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in value) or "none"
    return str(value)


# CLI option -> config key. Options left unset fall back to --config, then to the defaults.
CLI_KEYS = {
    "arch": "model.arch", "scale": "model.scale", "data": "data.sources", "patch": "data.patch",
    "batch": "data.batch", "workers": "data.workers", "augment": "data.augment", "lr": "optim.lr",
    "loss": "optim.loss", "clip_grad": "optim.clip_grad", "schedule": "schedule.kind", "warmup": "schedule.warmup",
    "steps": "train.steps", "precision": "train.precision", "device": "train.device", "ema": "train.ema",
    "seed": "train.seed", "threads": "train.threads", "val": "val.sets", "val_every": "val.every",
    "out": "run.out", "ckpt_every": "run.ckpt_every", "keep": "run.keep",
}


def build_config(options: dict, config_file: Path | None, sets: list[str] | None, resume: bool) -> TrainConfig:
    """Defaults <- run folder's config (with --resume) <- --config file <- --set <- explicit options."""
    from ..errors import SrkdError
    from ..train import config as C

    raw: dict = {}
    out = options.get("out")
    if resume and out is not None and (Path(out) / "config.yaml").is_file():
        raw = C.load_yaml(Path(out) / "config.yaml")
    if config_file is not None:
        raw = C.merge(raw, C.load_yaml(config_file))
    for item in sets or []:
        key, eq, value = item.partition("=")
        if not eq or "." not in key:
            raise SrkdError(f"--set expects SECTION.KEY=VALUE (e.g. optim.betas=0.9,0.99), got '{item}'")
        import yaml

        try:
            parsed = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError:
            parsed = value
        C.set_option(raw, key.strip(), parsed)
    for name, key in CLI_KEYS.items():
        value = options.get(name)
        if value is None or (isinstance(value, list) and not value and name != "val"):
            continue
        if name == "val":
            if not value:
                continue
            value = [v.strip() for v in ",".join(value).split(",") if v.strip() and v.strip().lower() != "none"]
        if name == "data":
            value = [str(v) for v in value]
        C.set_option(raw, key, value)
    return C.from_dict(raw)


def register(app: typer.Typer) -> None:
    @app.command("teacher-train")
    def teacher_train(
        arch: str = typer.Option(None, help=f"Preset family (edsr-baseline, edsr, rcan, carn, carn-m), preset (edsr-baseline-x4) or spec (edsr:n_feats=32,n_resblocks=8). (default: {_D.model.arch})"),
        scale: int = typer.Option(None, help=f"Upscaling factor: 2, 3, 4 or 8. (default: {_D.model.scale})"),
        data: list[Path] = typer.Option(None, "--data", help="Training data (repeatable): folder of HR images, DIV2K root, or a pair-list file."),
        val: list[str] = typer.Option(None, "--val", help=f"Validation benchmarks, comma-separated or repeated (set5, set14, b100, urban100); 'none' to skip. (default: {_dflt(_D.val.sets)})"),
        steps: int = typer.Option(None, help=f"Optimiser steps. (default: {_D.train.steps})"),
        out: Path = typer.Option(None, "--out", "-o", help="Run folder (config, metrics, checkpoints, model.safetensors)."),
        batch: int = typer.Option(None, help=f"Batch size per process. (default: {_D.data.batch})"),
        patch: int = typer.Option(None, help=f"LR patch size in pixels (HR patch = patch x scale). (default: {_D.data.patch})"),
        lr: float = typer.Option(None, help=f"Adam learning rate. (default: {_D.optim.lr:g})"),
        schedule: str = typer.Option(None, help=f"multistep (halve at 2/3 of the run), cosine or constant. (default: {_D.schedule.kind})"),
        warmup: int = typer.Option(None, help=f"Linear warm-up steps. (default: {_D.schedule.warmup})"),
        loss: str = typer.Option(None, help=f"Pixel loss: l1, l2 or charbonnier. (default: {_D.optim.loss})"),
        clip_grad: float = typer.Option(None, help=f"Gradient norm clipping (0: off). (default: {_D.optim.clip_grad:g})"),
        precision: str = typer.Option(None, help=f"auto (bf16 where the hardware has it), fp32, bf16 or fp16 (CUDA). (default: {_D.train.precision})"),
        device: str = typer.Option(None, help=f"auto, cpu, cuda or cuda:N. (default: {_D.train.device})"),
        ema: float = typer.Option(None, help=f"EMA decay of weights and buffers (0: off); the EMA model is validated and exported. (default: {_D.train.ema})"),
        val_every: int = typer.Option(None, help=f"Steps between validations (and at the end). (default: {_D.val.every})"),
        ckpt_every: int = typer.Option(None, help=f"Steps between checkpoints (and at the end). (default: {_D.run.ckpt_every})"),
        keep: int = typer.Option(None, help=f"Checkpoints kept (plus the best). (default: {_D.run.keep})"),
        seed: int = typer.Option(None, help=f"Random seed (initialisation and batches). (default: {_D.train.seed})"),
        workers: int = typer.Option(None, help=f"Data threads assembling batches ahead (0: in the training loop). (default: {_D.data.workers})"),
        threads: int = typer.Option(None, help=f"Torch CPU threads (0: cores minus workers). (default: {_D.train.threads})"),
        augment: bool = typer.Option(None, "--augment/--no-augment", help="Random flips and 90-degree rotations. (default: augment)"),
        init: str = typer.Option(None, "--init", help="Start from these weights instead of random initialisation: a model file, preset or hf:// of the same architecture, also of another scale (all but the upsampler loads, as EDSR trains x3/x4 from x2). (default: none)"),
        config: Path = typer.Option(None, "--config", help="YAML file with any of the options (sections model, data, optim, schedule, train, val, run); command-line options override it."),
        set_: list[str] = typer.Option(None, "--set", help="Override any config key: SECTION.KEY=VALUE (repeatable), e.g. optim.betas=0.9,0.99."),
        resume: bool = typer.Option(False, "--resume", help="Continue the run in --out (options not given are taken from its config). Re-running the same command also resumes."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Start over in a run folder that holds a run with a different configuration."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or summary."),
    ) -> None:
        """Train a super-resolution network on HR images (L1 to HR), with EMA, mixed precision, exact resume and DDP.

        Example: srkd teacher-train --arch edsr-baseline --scale 4 --data data/train/T91 --data data/train/BSD200
        --val set5 --steps 20000 --out runs/edsr-baseline-x4
        """
        from rich.console import Console

        from ..errors import SrkdError
        from ..train.engine import train

        options = dict(arch=arch, scale=scale, data=data, val=val, steps=steps, out=out, batch=batch, patch=patch, lr=lr,
                       schedule=schedule, warmup=warmup, loss=loss, clip_grad=clip_grad, precision=precision, device=device,
                       ema=ema, val_every=val_every, ckpt_every=ckpt_every, keep=keep, seed=seed, workers=workers,
                       threads=threads, augment=augment)
        if resume and overwrite:
            raise SrkdError("--resume and --overwrite contradict each other; pass one")
        cfg = build_config(options, config, set_, resume)
        if not cfg.run.out:
            raise SrkdError("no run folder: give --out DIR (or run.out in --config)")
        main = int(os.environ.get("RANK", "0")) == 0
        console = Console()
        if init is not None:
            local = Path(init).expanduser()
            cfg.method.init = str(local.resolve()) if local.exists() else init  # presets and hf:// stay references
        factory = warm_start(cfg, console.print if main and not quiet else None) if cfg.method.init else None
        result = train(cfg, factory, overwrite=overwrite, resume=resume, progress=not quiet, console=console)
        if main and not quiet:
            print_summary(console, result)
        exit_if_interrupted(console, result, main)


def warm_start(cfg, log):
    """Supervised training from ``cfg.method.init`` instead of random weights.

    The file is checked on a throw-away network first, so that a wrong file fails before the run
    folder is written. On resume the checkpoint then replaces these weights.
    """
    import torch

    from ..distill.init import init_student
    from ..train.engine import Supervised, build_student

    with torch.random.fork_rng(devices=[]):
        init_student(build_student(cfg.model), cfg.method.init, log=None)

    def factory(student):
        init_student(student, cfg.method.init, log=log)
        return Supervised(student, cfg.optim.loss)

    return factory


def exit_if_interrupted(console, result, main: bool) -> None:
    """After SIGINT/SIGTERM the engine has saved a checkpoint: say how to go on, exit 130/143."""
    if result.interrupted is None:
        return
    if main:
        console.print(f"interrupted at step {result.step}/{result.steps}; checkpoint saved in {result.run_dir}. "
                      "Run the same command again (or add --resume) to continue.")
    raise typer.Exit(130 if result.interrupted == signal.SIGINT else 143)


def print_summary(console, result) -> None:
    from rich.table import Table

    t = Table(title=f"{'already complete: ' if result.already_complete else ''}{result.run_dir}", show_header=False)
    t.add_column("", style="bold")
    t.add_column("")
    t.add_row("steps", f"{result.step}/{result.steps}")
    if result.train_seconds > 0:
        t.add_row("speed", f"{result.steps_per_second:.2f} steps/s ({result.precision}, {result.device}"
                  f"{f', {result.world} processes' if result.world > 1 else ''}); data loading {100 * result.data_fraction:.1f}% of step time")
    t.add_row("time", _hms(result.seconds))
    if result.final_loss is not None:
        t.add_row("final loss", f"{result.final_loss:.5f}")
    for name, v in (result.val or {}).items():
        t.add_row(f"val {name}", f"{v['psnr']:.2f} dB / {v['ssim']:.4f} SSIM (Y, EMA model)")
    if result.best:
        b = result.best
        t.add_row("best", f"{b['dataset']} {b['psnr']:.2f} dB at step {b['step']}")
    if result.model_path:
        t.add_row("model", str(result.model_path))
    from .output import show

    show(console, t)


def _hms(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
