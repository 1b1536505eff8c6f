"""``srkd data``: fetch and inspect benchmark data."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    data = typer.Typer(help="Download and list benchmark datasets.", no_args_is_help=True)
    app.add_typer(data, name="data")

    @data.command("download")
    def download(
        names: list[str] = typer.Argument(..., help="set5, set14, b100, urban100 (manga109 and div2k-val: manual)."),
        data_root: Path = typer.Option(None, help="Data root (default: $SRKD_DATA, else ~/.cache/srkd/data)."),
    ) -> None:
        """Download benchmark HR images (and Set5's official LR) with sha256 verification."""
        from rich.console import Console

        from ..data.download import download_dataset

        console = Console()
        for name in names:
            rep = download_dataset(name, data_root)
            console.print(f"{rep.dataset}: {rep.downloaded} downloaded, {rep.present} already present -> {rep.folder}")

    @data.command("list")
    def list_(data_root: Path = typer.Option(None, help="Data root (default: $SRKD_DATA, else ~/.cache/srkd/data).")) -> None:
        """Show which benchmark datasets are found under the data root."""
        from rich.console import Console
        from rich.table import Table

        from ..data.benchmarks import data_root as resolve
        from ..data.download import dataset_status

        table = Table(title=f"datasets under {resolve(data_root)}")
        for col in ("dataset", "images", "HR folder"):
            table.add_column(col)
        for name, folder, count in dataset_status(data_root):
            table.add_row(name, str(count) if count >= 0 else "error", folder)
        Console().print(table)
