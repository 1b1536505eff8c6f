"""``srkd models``: the preset table with parameters and multiply-adds."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command("models")
    def models(
        lr_size: str = typer.Option(
            None, help="LR input size WxH for multiply-adds. Default: 1280/s x 720/s, i.e. a 720p output (the field's convention)."
        ),
        as_json: bool = typer.Option(False, "--json", help="Print the presets as JSON (for scripts)."),
    ) -> None:
        """List model presets with parameters and multiply-adds (and whether official weights exist)."""
        import torch
        from rich.console import Console
        from rich.table import Table

        from ..complexity import count_macs, count_params
        from ..errors import SrkdError
        from ..io.zoo import ZOO
        from ..models.registry import PRESETS, build_from_spec

        fixed = None
        if lr_size:
            try:
                fixed = tuple(int(v) for v in lr_size.lower().split("x"))
                assert len(fixed) == 2 and min(fixed) > 0
            except (ValueError, AssertionError):
                raise SrkdError(f"--lr-size must look like 320x180, got '{lr_size}'") from None
        note = f"one {fixed[0]}x{fixed[1]} LR input" if fixed else "an LR input of 1280/s x 720/s (720p output)"
        table = Table(title=f"srkd presets; multiply-adds for {note}")
        for col in ("preset", "arch", "scale", "params", "LR input", "mult-adds", "official weights"):
            table.add_column(col, justify="left" if col in ("preset", "arch", "official weights") else "right", no_wrap=True)
        rows = []
        for name, preset in PRESETS.items():
            with torch.device("meta"):
                model = build_from_spec(name)
            w, h = fixed or (round(1280 / model.scale), round(720 / model.scale))
            macs = count_macs(model, (h, w))
            entry = ZOO.get(name)
            weights = "bundled" if entry and entry.bundled else ("download" if entry and entry.url else "manual")
            rows.append({"preset": name, "arch": preset.arch, "scale": model.scale, "params": count_params(model),
                         "lr_input": [w, h], "macs": macs, "official_weights": weights})
            table.add_row(name, preset.arch, f"x{model.scale}", f"{count_params(model) / 1e6:.3f}M", f"{w}x{h}",
                          f"{macs / 1e9:.1f}G", weights)
        from .output import print_json, show

        if as_json:
            print_json(rows)
        else:
            show(Console(), table)
