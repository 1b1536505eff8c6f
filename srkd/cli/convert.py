"""``srkd convert``: import other projects' official weights as srkd model files."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("convert")
    def convert(
        src: Path = typer.Argument(..., help="EDSR-PyTorch .pt, BasicSR .pth, CARN .pth or a state-dict .safetensors."),
        output: Path = typer.Option(..., "-o", "--output", help="Destination .safetensors file."),
        arch: str = typer.Option(None, help="Force the architecture family (edsr, rcan, carn, carn-m)."),
        scale: int = typer.Option(None, help="Keep only this head of a multi-scale file (default: keep all)."),
        res_scale: float = typer.Option(None, help="EDSR residual scaling (not stored in weights; default 0.1 for r32f256, else 1)."),
        overwrite: bool = typer.Option(False, help="Replace an existing output file."),
    ) -> None:
        """Convert official weights to a .safetensors model file with srkd metadata."""
        from rich.console import Console

        from ..complexity import count_params
        from ..io.convert import convert_file

        model = convert_file(src, output, arch=arch, scale=scale, res_scale=res_scale, overwrite=overwrite)
        heads = ", ".join(f"x{s}" for s in model.scales)
        Console().print(f"wrote {output}: {model.arch} ({heads}), {count_params(model):,} parameters, config {model.config()}")
