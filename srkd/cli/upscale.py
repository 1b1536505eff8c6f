"""``srkd upscale``: super-resolve image files, folders and glob patterns."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("upscale")
    def upscale_cmd(
        inputs: list[str] = typer.Argument(..., help="Image files, folders (their images) or glob patterns ('photos/*.jpg')."),
        output: Path = typer.Option(
            None, "--output", "-o",
            help="Output file (one input) or folder. Default: next to each input, named NAME<suffix>.EXT.",
        ),
        model: str = typer.Option(
            None, "--model", "-m",
            help="Model reference: path, preset (edsr-baseline-x4), hf://owner/repo/FILE@REV. Default: bundled CARN-M x4.",
        ),
        scale: int = typer.Option(None, help="Network scale for multi-scale models (the bundled model has x2, x3, x4). Default: the model's own."),
        outscale: float = typer.Option(None, help="Final size factor; the network output is resized to it. Default: the network scale."),
        suffix: str = typer.Option(None, help="Added to output names. Default: _x<factor>; '' keeps the names."),
        ext: str = typer.Option("same", help="Output format: same, png, jpg, webp, tiff or bmp."),
        tile: str = typer.Option(
            "auto", help="Tile size in LR pixels, 'auto' (from free memory, retried smaller on out-of-memory) or 'none'.",
        ),
        tile_pad: int = typer.Option(None, help="Context around each tile in LR pixels. Default: the model's receptive radius (exact), at most 64."),
        device: str = typer.Option("auto", help="auto, cpu, cuda[:N] or mps."),
        precision: str = typer.Option(
            "auto", help="auto (bf16/fp16 where the device is fast at it and the model's output stays within 4/255 of fp32), fp32, bf16 or fp16.",
        ),
        backend: str = typer.Option(
            "auto", envvar="SRKD_BACKEND", show_envvar=True,
            help="auto (the fastest installed runtime within 0.02 dB of fp32 on a real crop; chosen once per model, then cached), torch, onnxruntime or openvino. The runtimes come with the [deploy] extra.",
        ),
        compile: bool = typer.Option(False, "--compile", help="torch.compile the model (experimental: slower than eager on the CPU measured, see docs/upscale.md)."),
        alpha: str = typer.Option("model", help="Alpha channel: 'model' (upscaled by the network) or 'resize' (Lanczos)."),
        self_ensemble: bool = typer.Option(False, "--self-ensemble", help="Average the 8 flips/transposes: best quality, 8x slower."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing output files."),
        quality: int = typer.Option(95, min=1, max=100, help="JPEG/WebP quality."),
        png_compression: int = typer.Option(None, "--png-compression", min=0, max=9, help="PNG zlib level 0-9 (9: smallest, slowest). [default: fast: zlib RLE, within 2 % of level 6's size at a quarter of its time]"),
        pipeline: bool = typer.Option(True, "--pipeline/--no-pipeline", help="Folders: decode the next image and write the previous one while the network runs."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar and no summary line."),
    ) -> None:
        """Upscale images with a super-resolution model (exact seamless tiling, alpha, 16-bit)."""
        import sys
        import warnings

        from rich.console import Console

        from ..errors import SrkdWarning
        from ..upscale import upscale_files

        console = Console(stderr=True)
        errors = Console(stderr=True, highlight=False, soft_wrap=True)

        def on_error(src, msg: str) -> None:
            errors.print(f"srkd: error: {src}: {msg}", markup=False)

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", SrkdWarning)
            report = upscale_files(
                inputs, output, model=model, scale=scale, outscale=outscale, suffix=suffix, ext=ext, device=device,
                precision=precision, tile=tile, tile_pad=tile_pad, compile=compile, alpha=alpha,
                self_ensemble=self_ensemble, overwrite=overwrite, quality=quality, png_compression=png_compression, pipeline=pipeline, progress=not quiet and console.is_terminal,
                on_error=on_error, backend=backend,
            )
        for w in caught:
            if issubclass(w.category, SrkdWarning):
                errors.print(f"srkd: warning: {w.message}", markup=False)
        if not quiet:
            for msg in report.info:
                errors.print(f"srkd: {msg}", markup=False)
            n = len(report.done)
            line = f"upscaled {n} image{'s' if n != 1 else ''}"
            if n:
                line += f" ({report.megapixels:.1f} output MP) in {report.seconds:.1f} s: {report.mp_per_s:.2f} MP/s"
                if n == 1:
                    line += f" -> {report.done[0][1]}"
            if report.failed:
                line += f"; {len(report.failed)} failed"
            print(line, file=sys.stdout)
        if report.failed:
            raise typer.Exit(1)
