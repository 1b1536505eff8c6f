"""``srkd distill``: train a student from a frozen teacher with any registered KD method.

The training loop, run folders, resume, EMA, validation and progress are the shared engine's
(:mod:`srkd.train.engine`, the same as ``srkd teacher-train``); this module resolves the teacher
and the student, builds the method (:mod:`srkd.distill`) and compares the two networks at the end.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import typer

from ..train.config import TrainConfig

_D = TrainConfig()
ASSETS = Path(__file__).resolve().parent.parent / "assets"
DEMO_TEACHER = ASSETS / "demo-teacher-edsr-baseline-x4.safetensors"
BUNDLED_TRAIN = ASSETS / "train" / "T91"
DEFAULT_STUDENT = "edsr-baseline:n_feats=32"  # EDSR-baseline at half width: about 4x fewer parameters
SPEED_LR = 64  # LR side of the timing input of the final comparison


def _dflt(value) -> str:
    if isinstance(value, list):
        return ",".join(str(v) for v in value) or "none"
    return str(value)


def register(app: typer.Typer) -> None:
    @app.command("distill")
    def distill(
        method: str = typer.Option(None, "--method", "-m", help="Distillation method (see --list-methods): scratch, kd, fitnet, at, fakd, facd, ..."),
        teacher: str = typer.Option(None, "--teacher", "-t", help="Teacher model: .safetensors path, preset with official weights (edsr-baseline-x4) or hf://owner/repo. [default: the bundled demo teacher, EDSR-baseline x4]"),
        student: str = typer.Option(None, "--student", "-s", help=f"Student: preset family (edsr-baseline), preset (edsr-baseline-x4) or spec (edsr:n_resblocks=16,n_feats=32); randomly initialised at the teacher's scale. [default: {DEFAULT_STUDENT}]"),
        init: str = typer.Option(None, "--init", help="Start the student from these weights instead of random initialisation: a model (file, preset or hf://) of the same architecture, also of another scale (all but the upsampler loads; the skipped tensors are listed), or teacher-slice: the teacher's first channels (srkd compress; the baseline of CSD issue #9)."),
        set_: list[str] = typer.Option(None, "--set", help="Method hyper-parameter NAME=VALUE (e.g. lambda_kd=0.5, taps=body1,body3), or any config key SECTION.KEY=VALUE (e.g. optim.betas=0.9,0.99). Repeatable."),
        vgg_weights: str = typer.Option(None, "--vgg-weights", help="VGG-19 weights for methods with a VGG loss (csd): a .safetensors/.pth file, hf://owner/repo/file, hub (timm/vgg19.tv_in1k, cached) or random (tests only); same as --set vgg_weights=VALUE."),
        list_methods: bool = typer.Option(False, "--list-methods", help="List the methods with their hyper-parameters and defaults, then exit."),
        as_json: bool = typer.Option(False, "--json", help="With --list-methods: print them as JSON (for scripts)."),
        data: list[Path] = typer.Option(None, "--data", help="Training data (repeatable): folder of HR images, DIV2K root, or a pair-list file. [default: the bundled 12 T91 images]"),
        val: list[str] = typer.Option(None, "--val", help=f"Validation benchmarks, comma-separated or repeated; 'none' to skip. [default: {_dflt(_D.val.sets)}]"),
        steps: int = typer.Option(None, help=f"Optimiser steps. [default: {_D.train.steps}]"),
        out: Path = typer.Option(None, "--out", "-o", help="Run folder (config, metrics, checkpoints, model.safetensors). [default: runs/distill-METHOD-xSCALE]"),
        export: Path = typer.Option(None, "--export", help="Also write the distilled student here (.safetensors, with provenance and the teacher comparison)."),
        batch: int = typer.Option(None, help=f"Batch size per process. [default: {_D.data.batch}]"),
        patch: int = typer.Option(None, help=f"LR patch size in pixels (HR patch = patch x scale). [default: {_D.data.patch}]"),
        lr: float = typer.Option(None, help=f"Adam learning rate. [default: {_D.optim.lr:g}]"),
        schedule: str = typer.Option(None, help=f"multistep (halve at 2/3 of the run), cosine or constant. [default: {_D.schedule.kind}]"),
        warmup: int = typer.Option(None, help=f"Linear warm-up steps. [default: {_D.schedule.warmup}]"),
        clip_grad: float = typer.Option(None, help=f"Gradient norm clipping (0: off). [default: {_D.optim.clip_grad:g}]"),
        precision: str = typer.Option(None, help=f"Student training precision: auto (bf16 where the hardware has it), fp32, bf16 or fp16 (CUDA). [default: {_D.train.precision}]"),
        teacher_precision: str = typer.Option(None, help="Precision of the teacher's no-grad forward: auto (fastest), fp32, bf16, fp16. [default: auto]"),
        device: str = typer.Option(None, help=f"auto, cpu, cuda or cuda:N. [default: {_D.train.device}]"),
        ema: float = typer.Option(None, help=f"EMA decay of the student (0: off); the EMA model is validated and exported. [default: {_D.train.ema}]"),
        val_every: int = typer.Option(None, help=f"Steps between validations (and at the end). [default: {_D.val.every}]"),
        ckpt_every: int = typer.Option(None, help=f"Steps between checkpoints (and at the end). [default: {_D.run.ckpt_every}]"),
        keep: int = typer.Option(None, help=f"Checkpoints kept (plus the best). [default: {_D.run.keep}]"),
        seed: int = typer.Option(None, help=f"Random seed (initialisation and batches). [default: {_D.train.seed}]"),
        workers: int = typer.Option(None, help=f"Data threads assembling batches ahead (0: in the training loop). [default: {_D.data.workers}]"),
        threads: int = typer.Option(None, help=f"Torch CPU threads (0: cores minus workers). [default: {_D.train.threads}]"),
        augment: bool = typer.Option(None, "--augment/--no-augment", help="Random flips and 90-degree rotations. [default: augment]"),
        config: Path = typer.Option(None, "--config", help="YAML file with any of the options (sections model, data, optim, schedule, train, val, run, method: {name, teacher, params: {...}}); command-line options override it."),
        resume: bool = typer.Option(False, "--resume", help="Continue the run in --out (options not given are taken from its config). Re-running the same command also resumes."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Start over in a run folder holding a different run; replace an existing --export file."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar, summary or comparison."),
        check: bool = typer.Option(False, "--check", help="Check everything (method, values, teacher, student, data, sets, run folder), then exit without training."),
    ) -> None:
        """Distil a teacher into a smaller student with a published KD method, on the shared training engine.

        Example: srkd distill --method facd --steps 300   (bundled demo teacher, data and Set5; a few minutes on a CPU)
        """
        from rich.console import Console

        from ..errors import SrkdError

        console = Console()
        if list_methods:
            print_methods(console, as_json)
            return
        if resume and overwrite:
            raise SrkdError("--resume and --overwrite contradict each other; pass one")
        options = dict(data=data, val=val, steps=steps, out=out, batch=batch, patch=patch, lr=lr, schedule=schedule,
                       warmup=warmup, clip_grad=clip_grad, precision=precision, device=device, ema=ema,
                       val_every=val_every, ckpt_every=ckpt_every, keep=keep, seed=seed, workers=workers,
                       threads=threads, augment=augment)
        demo = None
        if not (data or teacher or student or init or config or resume or set_):
            demo = demo_defaults(method, options)
            if demo and not quiet:
                console.print(f"demo defaults (bundled data, teacher and student): {demo}; any option given replaces its default")
            init = options.pop("init", None)
        if vgg_weights is not None:
            local = Path(vgg_weights).expanduser()
            set_ = [*(set_ or []), f"vgg_weights={local.resolve() if local.exists() else vgg_weights}"]
        job = prepare(options, config, set_, resume, method=method, teacher=teacher, student=student, init=init,
                      teacher_precision=teacher_precision)
        if export is not None:
            from ..io.files import check_writable

            check_writable(export, overwrite)
        if check:
            check_job(job, overwrite=overwrite, resume=resume)
            if not quiet:
                console.print(f"ok: {job.cfg.method.name} -> {job.cfg.run.out}")
            return
        main = int(os.environ.get("RANK", "0")) == 0
        job.log = console.print if main and not quiet else None
        from ..train.engine import train

        result = train(job.cfg, job.factory, overwrite=overwrite, resume=resume, progress=not quiet, console=console)
        if main and not quiet:
            from .train import print_summary

            print_summary(console, result)
        from .train import exit_if_interrupted

        exit_if_interrupted(console, result, main)
        if not main or result.model_path is None:
            return
        comparison = None
        if not quiet or export is not None:
            comparison = compare(job, result.model_path, console if not quiet else None)
        if export is not None:
            from ..io.checkpoint import load_model_file, save_model

            mf = load_model_file(result.model_path)
            provenance = {**mf.provenance, "comparison": comparison}
            save_model(mf.model, export, provenance=provenance, overwrite=overwrite)
            if not quiet:
                console.print(f"student written to {export}")


# The main job on the bundled defaults (12 T91 images, the demo teacher, a 0.25x student) must show
# distillation working in a few minutes on 2 CPU cores. Measured there with `srkd distill --method
# facd` (wall clock with the final comparison; docs/distill.md, "The main job"): engine defaults
# but patch 32 and lr 5e-4 from random weights, 600 steps: Set5 29.20 dB (+0.77 over bicubic);
# from the teacher's 0.5-width slice, 600 steps: 29.47 (+1.04), 357-382 s; 500 steps: 29.33, 310 s;
# 500 steps at lr 1e-3: 29.95 dB (+1.52), 316 s.
DEMO = {"steps": 500, "patch": 32, "lr": 1e-3, "schedule": "cosine", "warmup": 50, "val_every": 300}


def demo_defaults(method: str | None, options: dict) -> str:
    """Fill the demo's values into the options left unset; a one-line description of what was set."""
    from ..distill import get_method

    chosen = []
    for key, value in DEMO.items():
        if options.get(key) is None:
            options[key] = value
            text = f"{value:.0e}".replace("e-0", "e-") if isinstance(value, float) else str(value)
            chosen.append(f"{key.replace('_', '-')} {text}")
    if "warmup 50" in chosen and options["steps"] <= DEMO["warmup"] * 4:  # a short run: a tenth of it
        options["warmup"] = options["steps"] // 10
        chosen[chosen.index("warmup 50")] = f"warmup {options['warmup']}"
    cls = get_method(method) if method else None
    if cls is not None and cls.uses_teacher and not cls.shares_teacher:
        options["init"] = "teacher-slice"
        chosen.append("init teacher-slice")
    return ", ".join(chosen)


class Job:
    """A resolved distillation run: the engine config and the method factory."""

    def __init__(self, cfg, teacher_file, teacher_ref: str):
        self.cfg = cfg
        self.teacher_file = teacher_file  # ModelFile
        self.teacher_ref = teacher_ref
        self.teacher_sha256 = ""
        self.log = None  # where the warm-start report goes (rank 0, not --quiet)

    @property
    def teacher(self):
        return self.teacher_file.model

    def factory(self, student):
        """The engine calls this with its freshly seeded student."""
        from ..distill import build_distiller

        m = self.cfg.method
        init_report = _load_init(student, m.init, log=self.log, teacher=self.teacher) if m.init else None
        d = build_distiller(m.name, student, self.teacher, m.params, m.teacher_precision)
        d.teacher_info = {"ref": self.teacher_ref, "sha256": self.teacher_sha256, "arch": self.teacher.arch,
                          "config": self.teacher.config()}
        if m.init:
            d.teacher_info["student_init"] = m.init
            d.teacher_info["student_init_skipped"] = init_report.skipped
        return d


def _explicit_scale(spec: str) -> int | None:
    """The scale a student spec fixes by itself (preset name or scale=N), else None."""
    from ..models.registry import PRESETS

    name, _, rest = spec.partition(":")
    found = None
    if name.strip().lower() in PRESETS:
        found = int(PRESETS[name.strip().lower()].config["scale"])
    for item in rest.split(","):
        key, eq, value = item.partition("=")
        if eq and key.strip() == "scale":
            try:
                found = int(value)
            except ValueError:
                from ..errors import SrkdError

                raise SrkdError(f"bad scale '{value}' in student spec '{spec}'") from None
    return found


def _resolve_teacher(ref: str | None):
    """(ModelFile, reference to record). Missing files give one clear line."""
    from ..errors import SrkdError
    from ..io.hub import load_model, model_hash

    if ref is None:
        if not DEMO_TEACHER.is_file():
            raise SrkdError(f"the bundled demo teacher ({DEMO_TEACHER.name}) is not installed; pass --teacher: a .safetensors "
                            "file, a preset with official weights (edsr-baseline-x4) or hf://owner/repo")
        ref = str(DEMO_TEACHER)
    local = Path(ref).expanduser()
    if local.exists():
        ref = str(local.resolve())  # a resumed run from another folder must see the same reference
    mf = load_model(ref)
    return mf, ref, model_hash(mf.path)


def _load_init(student, path: str, log=None, teacher=None):
    """Warm start, also from another scale: all but the upsampler loads (srkd.distill.init).

    ``teacher-slice`` copies the teacher's first-channel slice instead (srkd.compress).
    """
    if str(path) == "teacher-slice":
        from ..compress import init_from_teacher_slice
        from ..distill.init import InitReport

        info = init_from_teacher_slice(student, teacher)
        report = InitReport("teacher-slice", teacher.arch, tuple(teacher.scales), loaded=list(student.state_dict()))
        if log is not None:
            log(f"init: the teacher's {info['width']:g}-width channel slice ({len(report.loaded)} tensors)")
        return report
    from ..distill.init import init_student

    return init_student(student, path, log=log)


def prepare(options: dict, config_file, sets, resume: bool, *, method=None, teacher=None, student=None, init=None,
            teacher_precision=None) -> Job:
    """Resolve everything and validate the method on the real networks before any file is written."""
    from ..distill import build_distiller, get_method
    from ..errors import SrkdError
    from ..train import config as C
    from ..train.engine import build_student
    from .train import build_config

    method_sets, config_sets = {}, []
    for item in sets or []:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise SrkdError(f"--set expects NAME=VALUE (method hyper-parameter) or SECTION.KEY=VALUE, got '{item}'")
        if "." in key:
            config_sets.append(item)
        else:
            method_sets[key.strip()] = value.strip()

    # base config (defaults <- stored run with --resume <- --config <- dotted --set <- engine options)
    cfg = build_config({k: v for k, v in options.items()}, config_file, config_sets, resume)
    m = cfg.method
    name = method or (m.name if (config_file is not None or resume) and m.name else None)
    if not name:
        raise SrkdError("choose a method: --method NAME (srkd distill --list-methods shows them)")
    cls = get_method(name)
    params = {**(m.params or {}), **method_sets} if (method is None or method == m.name) else dict(method_sets)
    # Unknown names and bad values fail here, before training; the run records the typed values
    # (so that 0.5 from YAML and "0.5" from --set are the same run when resuming).
    typed = cls.Params.from_mapping(params, cls.name).to_dict()
    params = {k: typed[k] for k in params}

    teacher_file, teacher_ref, teacher_hash = _resolve_teacher(teacher or m.teacher)
    t_model = teacher_file.model

    # A stored run (--resume) fixes its student; a --config file sets it unless it left the default.
    spec = student or (cfg.model.arch if resume or (config_file is not None and cfg.model.arch != _D.model.arch) else None)
    if spec is None and cls.shares_teacher:
        from ..compress import model_spec

        spec = model_spec(t_model)  # csd: the student network is the teacher's own (shared weights)
    spec = spec or DEFAULT_STUDENT
    s_scale = _explicit_scale(spec) or t_model.scale
    if s_scale != t_model.scale:
        if s_scale in getattr(t_model, "scales", ()):
            t_model.set_scale(s_scale)
        else:
            raise SrkdError(f"teacher is x{t_model.scale} but student is x{s_scale}; distillation needs the same scale "
                            f"(drop the scale from --student to use x{t_model.scale})")
    cfg.model.arch, cfg.model.scale = spec, s_scale

    if not cfg.data.sources:
        cfg.data.sources = [str(BUNDLED_TRAIN)]
    if not cfg.run.out:
        cfg.run.out = f"runs/distill-{cls.name}-x{s_scale}"
    cfg.method.name = cls.name
    cfg.method.teacher = teacher_ref
    # The teacher's hash is part of the run's identity: resuming against a changed file is refused.
    cfg.method.teacher_sha256 = teacher_hash
    cfg.method.params = params
    if teacher_precision is not None:
        cfg.method.teacher_precision = teacher_precision
    if init is not None:
        local = Path(init).expanduser()
        cfg.method.init = str(local.resolve()) if local.exists() else str(init)  # presets and hf:// stay references
    cfg = C.from_dict(cfg.to_dict())  # re-validate with the resolved values

    # Build the method once on the real networks: bad taps or mismatched feature sizes are
    # reported now, not after the engine has created the run folder.
    probe_student = build_student(cfg.model)
    if cfg.method.init:
        _load_init(probe_student, cfg.method.init, log=None, teacher=t_model)
    probe = build_distiller(cls.name, probe_student, t_model, params, cfg.method.teacher_precision)
    probe.close()

    job = Job(cfg, teacher_file, teacher_ref)
    job.teacher_sha256 = teacher_hash
    return job


def check_job(job: Job, overwrite: bool = False, resume: bool = False) -> None:
    """What ``train`` would refuse at its start, without starting: config, data, sets, run folder."""
    from ..train.engine import check_config
    from ..train.runs import RunDir

    cfg = check_config(job.cfg, data=True)
    RunDir(cfg.run.out).plan(cfg, overwrite=overwrite, resume=resume)


# ------------------------------------------------------------------------------------ comparison


def _macs(model, scale: int) -> int:
    import copy

    from ..complexity import count_macs

    meta = copy.deepcopy(model).to("meta")
    return count_macs(meta, (720 // scale, 1280 // scale))


def _seconds_per_image(model, device, precision: str, repeats: int = 3) -> float:
    import torch

    from ..precision import autocast
    from ..precision import image_convs_fp32

    model = model.to(device).eval()
    x = torch.rand(1, 3, SPEED_LR, SPEED_LR, device=device)
    times = []
    with torch.no_grad(), autocast(device, precision), image_convs_fp32(model, precision != "fp32"):
        for i in range(repeats + 1):
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            model(x)
            if device.type == "cuda":
                torch.cuda.synchronize()
            if i:
                times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def compare(job: Job, student_path, console=None) -> dict:
    """Teacher vs student: parameters, multiply-adds, measured speed, validation PSNR/SSIM."""
    from ..complexity import count_params
    from ..precision import resolve_device
    from ..io.checkpoint import load_model_file

    cfg = job.cfg
    teacher = job.teacher.eval()
    student = load_model_file(student_path).model.eval()
    device = resolve_device(cfg.train.device)
    precision = cfg.val.precision
    rows = {}
    for role, model in (("teacher", teacher), ("student", student)):
        rows[role] = {
            "params": count_params(model),
            "macs": _macs(model, model.scale),
            "seconds": _seconds_per_image(model, device, precision),
            "val": {},
        }
        if cfg.val.sets:
            from ..evaluate import evaluate

            for r in evaluate(model, datasets=list(cfg.val.sets), scale=model.scale, data_root=cfg.val.data_root,
                              device=str(device), precision=precision, progress=False):
                rows[role]["val"][r.dataset] = {"psnr": r.psnr, "ssim": r.ssim, "images": r.n_images}
    t, s = rows["teacher"], rows["student"]
    bicubic = {}
    if cfg.val.sets:  # what every student must beat, under the same protocol
        from ..evaluate import evaluate_bicubic

        bicubic = {r.dataset: {"psnr": r.psnr, "ssim": r.ssim, "images": r.n_images}
                   for r in evaluate_bicubic(list(cfg.val.sets), teacher.scale, cfg.val.data_root)}
    out = {
        "teacher": t, "student": s, "bicubic": bicubic,
        "params_ratio": s["params"] / t["params"], "macs_ratio": s["macs"] / t["macs"],
        "speedup": t["seconds"] / s["seconds"], "timing": {"lr_size": SPEED_LR, "device": str(device), "precision": precision},
    }
    if console is not None:
        _print_comparison(console, job, out)
    return out


def _print_comparison(console, job: Job, c: dict) -> None:
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
