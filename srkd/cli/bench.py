"""``srkd bench``: every method of a protocol, every seed, one table (a thin layer over srkd.bench)."""

from __future__ import annotations

from pathlib import Path

import typer


def _seeds(text: str | None) -> list[int] | None:
    from ..errors import SrkdError

    if text is None:
        return None
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise SrkdError(f"--seeds expects comma-separated integers such as 0,1, got '{text}'") from None


def register(app: typer.Typer) -> None:
    @app.command("bench")
    def bench(
        protocol: Path = typer.Argument(None, metavar="PROTOCOL", help="Protocol file (YAML): teacher, student, config, seeds, entries. See examples/protocols/."),
        out: Path = typer.Option(None, "--out", "-o", metavar="DIR", help="Bench folder: ENTRY/seedN run folders, logs, results, report."),
        only: list[str] = typer.Option(None, "--only", metavar="LABEL", help="Run only this entry (label or id); repeatable."),
        seeds: str = typer.Option(None, "--seeds", metavar="0,1", help="Run only these seeds, comma-separated (e.g. 0,1). [default: the protocol's]"),
        print_commands: bool = typer.Option(False, "--print-commands", help="Print one srkd distill command per run (for a cluster queue) and exit."),
        collect: list[Path] = typer.Option(None, "--collect", metavar="DIR", help="Aggregate run folders made anywhere, or an earlier results.json standing in for folders that are gone, into --out, without running (repeatable)."),
        jobs: int = typer.Option(1, "--jobs", "-j", min=1, metavar="N", help="Runs at once, one GPU each (CUDA_VISIBLE_DEVICES)."),
        markdown: Path = typer.Option(None, "--markdown", metavar="FILE", help="Also write the paper-style table here ('-': print it)."),
        report: bool = typer.Option(True, "--report/--no-report", help="Write report.html (curves need matplotlib: the report extra)."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress display or table."),
    ) -> None:
        """Compare distillation methods under one protocol: every (entry, seed) as an ordinary srkd distill run, then the table.

        Example: srkd bench examples/protocols/mini-x4.yaml --out ~/bench/mini-x4
        """
        from rich.console import Console

        from ..bench import aggregate, load_protocol, run_grid, validate
        from ..errors import SrkdError

        console = Console()
        if collect:
            if protocol is not None:
                raise SrkdError("--collect aggregates existing run folders; give either a protocol or --collect, not both")
            if out is None:
                raise SrkdError("--collect needs --out DIR, where results.{json,csv,md} are written")
            results = aggregate.collect(collect, protocol=_stored_protocol(collect))
            _publish(console, results, out, markdown, report, quiet)
            return
        if protocol is None:
            raise SrkdError("give a protocol file (examples/protocols/mini-x4.yaml) or --collect RUN_FOLDERS")
        if out is None:
            raise SrkdError("give --out DIR: the bench folder that holds the runs and the results")
        p = load_protocol(protocol)
        runs = p.runs(out.expanduser().resolve(), only=only or None, seeds=_seeds(seeds))
        validate(p, out, runs)
        if print_commands:
            for r in runs:
                typer.echo(r.command())
            return
        if not quiet:
            skipped = [e.label for e in p.entries if not e.runnable]
            console.print(f"protocol {p.name} ({p.hash}): {len(runs)} runs"
                          + (f"; listed, not run: {', '.join(skipped)}" if skipped else ""))
        from ..io.files import FolderLock

        with FolderLock(out, "bench folder"):
            _keep_protocol(p, out)
            run_grid(p, out.expanduser().resolve(), runs, jobs=jobs, console=console, progress=not quiet)
            results = aggregate.collect([out], protocol=p)
            _publish(console, results, out, markdown, report, quiet)


def _keep_protocol(p, out: Path) -> None:
    """A copy of the protocol in the bench folder, so that --collect can name its entries and show it."""
    from ..io.files import atomic_path

    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "protocol.yaml", overwrite=True) as tmp:
        tmp.write_text(p.raw_text)


def _stored_protocol(paths):
    """The protocol a bench folder kept (the first found), with the teacher hash its runs recorded;
    else the one an earlier results.json among ``paths`` holds."""
    from ..bench import aggregate, load_protocol

    folders = [p for p in paths if not aggregate.is_results_file(p)]
    for path in folders:
        f = Path(path).expanduser() / "protocol.yaml"
        if f.is_file():
            p = load_protocol(f)
            runs = aggregate.find_runs([path])
            if runs:
                p.teacher_sha256 = aggregate.read_run(runs[0]).teacher_sha256
            return p
    for path in paths:
        if aggregate.is_results_file(path):
            res = aggregate.load_results(path)
            text = (res.get("protocol") or {}).get("text")
            if text:
                p = load_protocol(path, text=text)
                p.teacher_sha256 = str(res.get("teacher_sha256") or "")
                return p
    return None


def _publish(console, results, out: Path, markdown, report: bool, quiet: bool) -> None:
    from ..bench import aggregate

    if results["sets"]:
        aggregate.add_reference(results, out, progress=None if quiet else console.print)
    written = aggregate.write(results, out)
    if markdown is not None:
        text = aggregate.paper_table(results)
        if str(markdown) == "-":
            console.print(text, markup=False, highlight=False, soft_wrap=True)
        else:
            from ..io.files import atomic_path

            with atomic_path(markdown, overwrite=True) as tmp:
                tmp.write_text(text)
    if report:
        from ..bench.report import write_report

        written.append(write_report(results, out, console=None if quiet else console))
    if not quiet:
        print_table(console, results)
        console.print("written: " + ", ".join(str(p) for p in written), soft_wrap=True)


def print_table(console, results: dict) -> None:
    from rich.table import Table

    from ..bench.tables import _fmt, _name

    sets = results["sets"]
    table = Table(title=f"srkd bench {results['protocol']['name']} ({results['protocol']['hash']}): Y-PSNR dB, mean ± sd over seeds; Δ vs scratch (paired)")
    table.add_column("method", no_wrap=True, overflow="fold")
    table.add_column("n", justify="right")
    for s in sets:
        table.add_column(_name(s), justify="right", no_wrap=True)
        table.add_column("Δ", justify="right", no_wrap=True)
    for e in results["entries"]:
        if not e["n"]:
            table.add_row(e["label"], "0", *[""] * (2 * len(sets)))
            table.add_row("", "", f"[dim]{e['not_run'] or 'no finished run'}[/]", *[""] * (2 * len(sets) - 1))
            continue
        row = [e["label"], str(e["n"])]
        for s in sets:
            st = e["sets"][s]
            row.append(_fmt(st["psnr_mean"], st["psnr_std"], 2))
            g = e["gain"].get(s)
            text = _fmt(g["psnr_mean"], g["psnr_std"], 3, sign=True) if g else ""
            row.append(f"[bold green]{text}[/]" if g and g["exceeds_spread"] else text)
        table.add_row(*row)
    from .output import show

    show(console, table)
    if results["incomplete"]:
        console.print(f"{len(results['incomplete'])} unfinished run(s) left out")
