"""``srkd export``: a model as ONNX, OpenVINO IR, ExportedProgram or TorchScript, parity-checked."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("export")
    def export(
        model: str = typer.Argument(None, metavar="MODEL", help="A .safetensors path, a preset or hf://... Default: bundled CARN-M."),
        output: Path = typer.Option(..., "-o", "--output", metavar="FILE",
                                    help="Destination: .onnx, .xml (OpenVINO; .bin beside it), .pt2 (ExportedProgram) or .pt (TorchScript)."),
        fmt: str = typer.Option(None, "--format", metavar="NAME",
                                help="onnx, openvino, exported-program or torchscript. Default: from the suffix."),
        precision: str = typer.Option("fp32", metavar="P", help="fp32; fp16 (onnx, openvino, exported-program, torchscript); bf16 (exported-program, torchscript)."),
        scale: int = typer.Option(None, help="Head of a multi-scale model to export. Default: its active scale."),
        no_pixel_shuffle: bool = typer.Option(False, "--no-pixel-shuffle",
                                              help="Replace PixelShuffle by the exactly equal fixed ConvTranspose2d (mobile delegates)."),
        check: bool = typer.Option(True, "--check/--no-check", help="Run the file in its runtime and compare with srkd's fp32 output."),
        overwrite: bool = typer.Option(False, help="Replace an existing output file."),
    ) -> None:
        """Export a model; the file is checked in its runtime against srkd's fp32 output."""
        from rich.console import Console

        from ..export import export_model
        from ..io.hub import load_model

        mf = load_model(model, scale=scale)
        report = export_model(mf, output, fmt=fmt, precision=precision, overwrite=overwrite,
                              pixel_shuffle="conv-transpose" if no_pixel_shuffle else "keep", check=check)
        Console(soft_wrap=True).print(report.summary(), markup=False)
