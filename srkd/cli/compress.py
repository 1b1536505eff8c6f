"""``srkd compress``: cut a channel-split student out of a model and report what it buys."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("compress")
    def compress(
        model: str = typer.Argument(..., help="Model reference: a .safetensors path, a preset or hf://owner/repo/file@rev (EDSR, RCAN, CARN or CARN-M)."),
        width: float = typer.Option(None, "--width", "-w", help="Fraction of channels kept, in (0, 1]. Default: the width a CSD run recorded in the file."),
        output: Path = typer.Option(..., "-o", "--output", help="Destination .safetensors file for the plain student."),
        scale: int = typer.Option(None, help="Active scale of a multi-scale model (all heads are extracted)."),
        dataset: list[str] = typer.Option(None, "--dataset", "-d", metavar="NAME", help="Benchmark(s) for the PSNR of both widths (repeatable). Default: set5."),
        no_eval: bool = typer.Option(False, "--no-eval", help="Skip the benchmark PSNR."),
        data_root: Path = typer.Option(None, help="Data root (default: $SRKD_DATA, else the user cache)."),
        speed_size: int = typer.Option(64, help="LR side (pixels) of the timing input."),
        repeats: int = typer.Option(3, help="Timed forwards per width (the fastest is reported); 0 skips timing."),
        precision: str = typer.Option("fp32", help="Precision of the timing: fp32, bf16 or fp16."),
        eval_precision: str = typer.Option("fp32", help="Precision of the benchmark evaluation."),
        device: str = typer.Option("auto", help="auto, cpu, cuda or mps."),
        json_out: Path = typer.Option(None, "--json", help="Also write the report as JSON."),
        overwrite: bool = typer.Option(False, help="Replace existing output files."),
    ) -> None:
        """Extract the width-w student of a channel-split (or ordinary) model as a standalone plain model."""
        from rich.console import Console
        from rich.table import Table

        from ..compress import check_speed_size, cut, measure
        from ..io.files import atomic_path, check_writable

        check_writable(output, overwrite)
        if json_out is not None:
            check_writable(json_out, overwrite)
        check_speed_size(speed_size)
        result = cut(model, width, output, scale=scale, overwrite=overwrite)
        student, width, teacher = result.student, result.width, result.teacher
        console = Console()
        console.print(f"wrote {output}: {student.arch} x{student.scale} with {student.n_feats} features "
                      f"(width {width:g} of {teacher.n_feats})")
        report = measure(result, datasets=() if no_eval else tuple(dataset or ("set5",)), data_root=data_root,
                         speed_size=speed_size, repeats=repeats, precision=precision, eval_precision=eval_precision,
                         device=device).report
        table = Table(title=f"{teacher.arch} x{teacher.scale}: width 1 vs {width:g}")
        table.add_column("")
        table.add_column("width 1", justify="right")
        table.add_column(f"width {width:g}", justify="right")
        table.add_column("ratio", justify="right")
        t, s = report.teacher, report.student
        table.add_row("features", str(t.n_feats), str(s.n_feats), "")
        table.add_row("parameters", f"{t.params:,}", f"{s.params:,}", f"{report.compression:.2f}x")
        table.add_row(f"multiply-adds ({speed_size}x{speed_size} LR)", f"{t.macs / 1e9:.2f} G", f"{s.macs / 1e9:.2f} G",
                      f"{report.mac_ratio:.2f}x")
        if report.speedup is not None:
            table.add_row(f"time ({precision}, {report.device})", f"{t.seconds * 1e3:.1f} ms", f"{s.seconds * 1e3:.1f} ms",
                          f"{report.speedup:.2f}x")
        for label in t.psnr:
            table.add_row(f"PSNR {label} (Y)", f"{t.psnr[label]:.2f}", f"{s.psnr[label]:.2f}",
                          f"{s.psnr[label] - t.psnr[label]:+.2f} dB")
        from .output import show

        show(console, table)
        if json_out is not None:
            with atomic_path(json_out, overwrite=overwrite) as tmp:
                tmp.write_text(json.dumps({"output": str(output), **report.to_dict()}, indent=2))
