"""``srkd data``: fetch and inspect benchmark data."""

from __future__ import annotations

from pathlib import Path

import typer

_ROOT_HELP = "Data root (default: $SRKD_DATA, else $SRKD_CACHE/data, i.e. ~/.cache/srkd/data)."


def register(app: typer.Typer) -> None:
    data = typer.Typer(help="Download and list benchmark datasets.", no_args_is_help=True, rich_markup_mode=None)
    app.add_typer(data, name="data")

    @data.command("download")
    def download(
        names: list[str] = typer.Argument(..., help="set5, set14, b100, urban100 or all (manga109, div2k-val: manual)."),
        data_root: Path = typer.Option(None, help=_ROOT_HELP),
    ) -> None:
        """Download benchmark HR images (and Set5's official LR) from pinned sources, sha256-verified."""
        from rich.console import Console

        from ..data.download import download_dataset, resolve_names

        console = Console()
        for key in resolve_names(names):  # unknown names fail before anything is fetched
            rep = download_dataset(key, data_root)
            console.print(f"{rep.dataset}: {rep.downloaded} downloaded, {rep.present} already present -> {rep.folder}")

    @data.command("list")
    def list_(data_root: Path = typer.Option(None, help=_ROOT_HELP)) -> None:
        """Show each named dataset: whether it is found under the data root, its image count, where."""
        from rich.console import Console
        from rich.table import Table

        from ..data.benchmarks import data_root as resolve
        from ..data.download import MANUAL, dataset_status

        console = Console()
        table = Table(title=f"datasets under {resolve(data_root)}")
        for col in ("dataset", "found", "images", "HR folder"):
            table.add_column(col, overflow="fold")
        missing = []
        for name, folder, count in dataset_status(data_root):
            found = "yes" if folder != "-" else ("no (manual)" if name in MANUAL else "no")
            images = "-" if folder == "-" else (str(count) if count >= 0 else "non-image file")
            table.add_row(name, found, images, folder)
            if folder == "-" and name not in MANUAL:
                missing.append(name)
        from .output import show

        show(console, table)
        if missing:
            console.print(f"get the missing ones with: srkd data download {' '.join(missing)}", soft_wrap=True)
