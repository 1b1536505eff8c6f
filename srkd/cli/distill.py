"""``srkd distill``: train a student from a frozen teacher with any registered KD method.

The command parses and prints; :mod:`srkd.distill.run` (``srkd.distill(...)``) resolves the
teacher and the student, builds the method, trains on the shared engine and compares the two.
"""

from __future__ import annotations

import os
from pathlib import Path

import typer

from ..distill.run import DEFAULT_STUDENT
from .options import engine_options


def register(app: typer.Typer) -> None:
    @app.command("distill")
    @engine_options(
        data="Training data (repeatable): folder of HR images, DIV2K root, or a pair-list file. [default: the bundled 12 T91 images]",
        out="Run folder (config, metrics, checkpoints, model.safetensors). [default: runs/distill-METHOD-xSCALE]",
        precision="Student training precision: auto (bf16 where the hardware has it), fp32, bf16 or fp16 (CUDA). [default: auto]",
    )
    def distill(
        method: str = typer.Option(None, "--method", "-m", help="Distillation method (see --list-methods): scratch, kd, fitnet, at, fakd, facd, ..."),
        teacher: str = typer.Option(None, "--teacher", "-t", help="Teacher model: .safetensors path, preset with official weights (edsr-baseline-x4) or hf://owner/repo. [default: the bundled demo teacher, EDSR-baseline x4]"),
        student: str = typer.Option(None, "--student", "-s", help=f"Student: preset family (edsr-baseline), preset (edsr-baseline-x4) or spec (edsr:n_resblocks=16,n_feats=32); randomly initialised at the teacher's scale. [default: {DEFAULT_STUDENT}]"),
        init: str = typer.Option(None, "--init", help="Start the student from these weights instead of random initialisation: a model (file, preset or hf://) of the same architecture, also of another scale (all but the upsampler loads; the skipped tensors are listed), or teacher-slice: the teacher's first channels (srkd compress; the baseline of CSD issue #9)."),
        set_: list[str] = typer.Option(None, "--set", metavar="KEY=VALUE", help="Method hyper-parameter NAME=VALUE (e.g. lambda_kd=0.5, taps=body1,body3), or any config key SECTION.KEY=VALUE (e.g. optim.betas=0.9,0.99). Repeatable."),
        vgg_weights: str = typer.Option(None, "--vgg-weights", help="VGG-19 weights for methods with a VGG loss (csd): a .safetensors/.pth file, hf://owner/repo/file, hub (timm/vgg19.tv_in1k, cached) or random (tests only); same as --set vgg_weights=VALUE."),
        list_methods: bool = typer.Option(False, "--list-methods", help="List the methods with their hyper-parameters and defaults, then exit."),
        as_json: bool = typer.Option(False, "--json", help="With --list-methods: print them as JSON (for scripts)."),
        export: Path = typer.Option(None, "--export", help="Also write the distilled student here (.safetensors, with provenance and the teacher comparison)."),
        teacher_precision: str = typer.Option(None, help="Precision of the teacher's no-grad forward: auto (fastest), fp32, bf16, fp16. [default: auto]"),
        config: Path = typer.Option(None, "--config", help="YAML file with any of the options (sections model, data, optim, schedule, train, val, run, method: {name, teacher, params: {...}}); command-line options override it."),
        resume: bool = typer.Option(False, "--resume", help="Continue the run in --out (options not given are taken from its config). Re-running the same command also resumes."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Start over in a run folder holding a different run; replace an existing --export file."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar, summary or comparison."),
        check: bool = typer.Option(False, "--check", help="Check everything (method, values, teacher, student, data, sets, run folder), then exit without training."),
        *,
        engine: dict,
    ) -> None:
        """Distil a teacher into a smaller student with a published KD method, on the shared training engine.

        Example: srkd distill --method facd   (bundled demo teacher, data and Set5; about 5 minutes on 2 CPU cores)
        """
        from rich.console import Console

        from ..distill import run as R
        from ..errors import SrkdError
        from ..io.files import check_writable
        from .train import exit_if_interrupted, print_summary

        console = Console()
        if list_methods:
            print_methods(console, as_json)
            return
        if resume and overwrite:
            raise SrkdError("--resume and --overwrite contradict each other; pass one")
        options = dict(engine)
        if not (engine.get("data") or teacher or student or init or config or resume or set_):
            demo = R.demo_defaults(method, options)
            if demo and not quiet:
                console.print(f"demo defaults (bundled data, teacher and student): {demo}; any option given replaces its default")
            init = options.pop("init", None)
        if vgg_weights is not None:
            local = Path(vgg_weights).expanduser()
            set_ = [*(set_ or []), f"vgg_weights={local.resolve() if local.exists() else vgg_weights}"]
        job = R.prepare(options, config, set_, resume, method=method, teacher=teacher, student=student, init=init,
                        teacher_precision=teacher_precision)
        if export is not None:
            check_writable(export, overwrite)
        if check:
            R.check_job(job, overwrite=overwrite, resume=resume)
            if not quiet:
                console.print(f"ok: {job.cfg.method.name} -> {job.cfg.run.out}")
            return
        main = int(os.environ.get("RANK", "0")) == 0
        job.log = console.print if main and not quiet else None
        out = R.run_job(job, overwrite=overwrite, resume=resume, progress=not quiet, console=console, export=export,
                        compare_models=not quiet)
        result = out.train
        if main and not quiet:
            print_summary(console, result)
        exit_if_interrupted(console, result, main)
        if out.comparison is not None and not quiet:
            print_comparison(console, job, out.comparison)
        if out.export is not None and not quiet:
            console.print(f"student written to {export}")


def print_comparison(console, job, c: dict) -> None:
    from rich.table import Table

    t, s = c["teacher"], c["student"]
    scale = job.teacher.scale
    table = Table(title=f"teacher vs student ({job.cfg.method.name}, x{scale})")
    table.add_column("")
    table.add_column("bicubic", justify="right")
    table.add_column("teacher", justify="right")
    table.add_column("student", justify="right")
    table.add_column("student / teacher", justify="right")
    table.add_column("student - bicubic", justify="right")
    table.add_row("parameters", "0", f"{t['params'] / 1e6:.3f} M", f"{s['params'] / 1e6:.3f} M", f"{c['params_ratio']:.2f}x", "")
    table.add_row(f"multiply-adds (720p output)", "", f"{t['macs'] / 1e9:.1f} G", f"{s['macs'] / 1e9:.1f} G", f"{c['macs_ratio']:.2f}x", "")
    tm = c["timing"]
    table.add_row(f"time per {tm['lr_size']}x{tm['lr_size']} LR ({tm['precision']}, {tm['device']})", "",
                  f"{t['seconds'] * 1e3:.1f} ms", f"{s['seconds'] * 1e3:.1f} ms", f"{c['speedup']:.2f}x faster", "")
    bic = c.get("bicubic") or {}
    for name, tv in t["val"].items():
        sv = s["val"].get(name)
        if sv:
            bv = bic.get(name)
            table.add_row(f"{name} PSNR / SSIM (Y)", f"{bv['psnr']:.2f} dB / {bv['ssim']:.4f}" if bv else "–",
                          f"{tv['psnr']:.2f} dB / {tv['ssim']:.4f}", f"{sv['psnr']:.2f} dB / {sv['ssim']:.4f}",
                          f"{sv['psnr'] - tv['psnr']:+.2f} dB", f"{sv['psnr'] - bv['psnr']:+.2f} dB" if bv else "")
    console.print(f"teacher: {job.teacher.arch} ({_short(job.teacher)}) from {job.teacher_ref}")
    console.print(f"student: {job.cfg.model.arch} at x{scale}, method {job.cfg.method.name}")
    from .output import show

    show(console, table)


def _short(model) -> str:
    cfg = model.config()
    keys = [k for k in ("n_resgroups", "n_resblocks", "n_feats") if k in cfg]
    return ",".join(f"{k}={cfg[k]}" for k in keys)


def print_methods(console, as_json: bool = False) -> None:
    from rich.markup import escape
    from rich.table import Table

    from ..distill import METHODS, method_doc
    from .output import print_json, show

    if as_json:
        docs = [method_doc(cls) for cls in METHODS.values()]
        print_json([{"name": d.name, "summary": d.summary,
                     "params": [{"name": n, "type": t, "default": v if isinstance(v, (int, float, str, bool, type(None))) else list(v) if isinstance(v, tuple) else str(v), "help": h}
                                for n, t, v, h in d.params]} for d in docs])
        return
    for cls in METHODS.values():
        doc = method_doc(cls)
        table = Table(title=f"{doc.name}: {doc.summary}", title_justify="left", show_edge=False)
        table.add_column("hyper-parameter")
        table.add_column("type")
        table.add_column("default")
        table.add_column("meaning")
        for name, tp, default, help_ in doc.params:
            table.add_row(name, tp, escape(str(default)), escape(help_))  # help texts hold [a|b] choices, not markup
        show(console, table)
        console.print()
    console.print("Set them with --set NAME=VALUE or under method: {params: {...}} in --config. Method pages: docs/methods/.")
