"""``srkd teacher-train``: supervised training of any architecture with the shared engine.

The command parses and prints; :func:`srkd.train.api.train_network` (``srkd.train(...)``) trains.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import typer

from ..train.config import TrainConfig
from .options import engine_options

_D = TrainConfig()


def register(app: typer.Typer) -> None:
    @app.command("teacher-train")
    @engine_options()
    def teacher_train(
        arch: str = typer.Option(None, help=f"Preset family (edsr-baseline, edsr, rcan, carn, carn-m), preset (edsr-baseline-x4) or spec (edsr:n_feats=64,n_resblocks=16). [default: {_D.model.arch}]"),
        scale: int = typer.Option(None, help=f"Upscaling factor: 2, 3, 4 or 8. [default: {_D.model.scale}]"),
        loss: str = typer.Option(None, help=f"Pixel loss: l1, l2 or charbonnier. [default: {_D.optim.loss}]"),
        init: str = typer.Option(None, "--init", help="Start from these weights instead of random initialisation: a model file, preset or hf:// of the same architecture, also of another scale (all but the upsampler loads, as EDSR trains x3/x4 from x2). [default: none]"),
        config: Path = typer.Option(None, "--config", help="YAML file with any of the options (sections model, data, optim, schedule, train, val, run); command-line options override it."),
        set_: list[str] = typer.Option(None, "--set", metavar="KEY=VALUE", help="Override any config key: SECTION.KEY=VALUE (repeatable), e.g. optim.betas=0.9,0.99."),
        resume: bool = typer.Option(False, "--resume", help="Continue the run in --out (options not given are taken from its config). Re-running the same command also resumes."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Start over in a run folder that holds a run with a different configuration."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or summary."),
        *,
        engine: dict,
    ) -> None:
        """Train a super-resolution network on HR images (L1 to HR), with EMA, mixed precision, exact resume and DDP.

        Example: srkd teacher-train --arch edsr-baseline --scale 4 --data data/train/T91 --data data/train/BSD200
        --val set5 --steps 20000 --out runs/edsr-baseline-x4
        """
        from rich.console import Console

        from ..errors import SrkdError
        from ..train.api import train_network

        if resume and overwrite:
            raise SrkdError("--resume and --overwrite contradict each other; pass one")
        main = int(os.environ.get("RANK", "0")) == 0
        console = Console()
        result = train_network(arch, scale=scale, loss=loss, init=init, config=config, sets=set_, resume=resume,
                               overwrite=overwrite, progress=not quiet, console=console,
                               log=console.print if main and not quiet else None, **engine)
        if main and not quiet:
            print_summary(console, result)
        exit_if_interrupted(console, result, main)


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
