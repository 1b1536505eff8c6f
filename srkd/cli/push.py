"""``srkd push``: publish a model on the Hugging Face Hub (model file, config.json, model card)."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("push")
    def push(
        model: str = typer.Argument(..., metavar="MODEL", help="A .safetensors path, a preset or hf://..."),
        repo_id: str = typer.Argument(..., metavar="OWNER/NAME", help="The Hub repository (created if missing)."),
        private: bool = typer.Option(False, "--private", help="Create the repository private."),
        revision: str = typer.Option(None, metavar="BRANCH", help="Upload to this branch (created if missing). Default: main."),
        dry_run: Path = typer.Option(None, "--dry-run", metavar="DIR", help="Write the repository's files to DIR and upload nothing."),
        license: str = typer.Option("apache-2.0", metavar="ID", help="Licence in the model card (a Hub licence id)."),
        dataset: list[str] = typer.Option(None, "--dataset", metavar="NAME", help="Training dataset for the card (repeatable)."),
        overwrite: bool = typer.Option(False, help="With --dry-run: replace the files of a non-empty DIR."),
    ) -> None:
        """Publish a model on the Hugging Face Hub (model file, config.json, model card) for hf:// loading."""
        from rich.console import Console

        from ..io.hub import load_model
        from ..push import push as do_push
        from ..push import write_folder

        mf = load_model(model)
        console = Console(soft_wrap=True)
        if dry_run is not None:
            folder = write_folder(mf, dry_run, repo_id, license, list(dataset or []), overwrite=overwrite)
            console.print(f"wrote {folder}: model.safetensors, config.json, README.md (nothing uploaded)", markup=False)
            return
        url = do_push(mf, repo_id, private=private, revision=revision, license=license, datasets=list(dataset or []))
        console.print(f"pushed {mf.path.name} to {repo_id}: {url}", markup=False)
