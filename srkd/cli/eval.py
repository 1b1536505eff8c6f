"""``srkd eval``: protocol-exact PSNR/SSIM on named benchmarks."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("eval")
    def eval_(
        model: str = typer.Argument(None, help="Model reference: a .safetensors path, a preset, or hf://owner/repo/FILE@REV (FILE and REV optional). Default: bundled CARN-M."),
        dataset: list[str] = typer.Option(None, "--dataset", "-d", metavar="NAME", help="Benchmark name (repeatable): set5, set14, b100, urban100, manga109, div2k-val. Default: set5."),
        scale: int = typer.Option(None, help="Scale for multi-scale models (default: the model's own)."),
        data_root: Path = typer.Option(None, help="Data root (default: $SRKD_DATA, else the user cache)."),
        hr: Path = typer.Option(None, help="Evaluate on a folder of HR images (LR made with MATLAB bicubic)."),
        lr: Path = typer.Option(None, help="Folder of LR images paired with --hr (name or namex<s> matching)."),
        self_ensemble: bool = typer.Option(False, help="x8 flips/transposes averaged; reported with a '+'."),
        metric: str = typer.Option("y", help="y (BT.601 luma, the benchmark protocol) or rgb."),
        device: str = typer.Option("auto", help="auto, cpu, cuda or mps."),
        precision: str = typer.Option("fp32", help="fp32, bf16 or fp16."),
        backend: str = typer.Option("torch", help="torch, onnxruntime, openvino or auto ([deploy] extra)."),
        tile: int = typer.Option(None, help="Tile size in LR pixels for images too big for memory (exact within one 8-bit level)."),
        per_image: bool = typer.Option(False, help="Also print and export per-image scores."),
        save_images: Path = typer.Option(None, help="Write the SR images (PNG) under this folder."),
        json_out: Path = typer.Option(None, "--json", help="Write results as JSON."),
        csv_out: Path = typer.Option(None, "--csv", help="Write results as CSV."),
        markdown_out: Path = typer.Option(None, "--markdown", help="Write results as a Markdown table."),
        overwrite: bool = typer.Option(False, help="Replace existing --json/--csv/--markdown files."),
    ) -> None:
        """Evaluate a model with the field's protocol (Y channel, shave = scale, MATLAB bicubic LR)."""
        from rich.console import Console
        from rich.table import Table

        from ..evaluate import evaluate
        from ..io.files import check_writable
        from ..io.hub import load_model

        for out in (json_out, csv_out, markdown_out):
            if out is not None:
                check_writable(out, overwrite)
        loaded = load_model(model, scale=scale)
        names = list(dataset or ([] if hr else ["set5"]))
        results = evaluate(loaded.model, names, data_root=data_root, device=device, precision=precision, backend=backend,
                           self_ensemble=self_ensemble, tile=tile, metric=metric, save_images=save_images,
                           hr_dir=hr, lr_dir=lr)
        console = Console()
        title = f"{loaded.path.name} ({loaded.model.arch}, x{loaded.model.scale}, {metric.upper()} metric)"
        table = Table(title=title)
        for col in ("dataset", "images", "PSNR", "SSIM", "seconds"):
            table.add_column(col, justify="left" if col == "dataset" else "right")
        for r in results:
            table.add_row(r.label, str(r.n_images), f"{r.psnr:.2f}", f"{r.ssim:.4f}", f"{r.seconds:.1f}")
            if per_image:
                for im in r.images:
                    table.add_row(f"  {im.name}", "", f"{im.psnr:.2f}", f"{im.ssim:.4f}", "")
        from .output import show

        show(console, table)
        rows = [r.to_dict(per_image) for r in results]
        if json_out:
            _write_text(json_out, json.dumps({"model": str(loaded.path), "results": rows}, indent=2))
        if csv_out:
            _write_text(csv_out, _csv(results, per_image))
        if markdown_out:
            _write_text(markdown_out, markdown_table(results, per_image))


def markdown_table(results, per_image: bool = False) -> str:
    lines = ["| dataset | scale | images | PSNR | SSIM |", "|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r.label} | x{r.scale} | {r.n_images} | {r.psnr:.2f} | {r.ssim:.4f} |")
        if per_image:
            lines += [f"| {r.label}/{im.name} | x{r.scale} | 1 | {im.psnr:.2f} | {im.ssim:.4f} |" for im in r.images]
    return "\n".join(lines) + "\n"


def _csv(results, per_image: bool) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["dataset", "image", "scale", "metric", "psnr", "ssim", "seconds"])
    for r in results:
        writer.writerow([r.label, "", r.scale, r.metric, f"{r.psnr:.4f}", f"{r.ssim:.6f}", f"{r.seconds:.3f}"])
        if per_image:
            for im in r.images:
                writer.writerow([r.label, im.name, r.scale, r.metric, f"{im.psnr:.4f}", f"{im.ssim:.6f}", ""])
    return buf.getvalue()


def _write_text(path: Path, text: str) -> None:
    from ..io.files import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(text)
