"""A distillation run, as the library runs it: ``srkd.distill(...)`` and ``srkd distill`` both come here.

:func:`prepare` resolves the teacher, the student, the method and its hyper-parameters into a
:class:`Job` and checks them on the real networks before any file is written; :func:`distill`
trains it on the shared engine (:mod:`srkd.train`) and compares student and teacher at the end
(:func:`compare`: parameters, multiply-adds, speed, validation scores, bicubic).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import SrkdError
from ..train.config import TrainConfig

_D = TrainConfig()
ASSETS = Path(__file__).resolve().parent.parent / "assets"
DEMO_TEACHER = ASSETS / "demo-teacher-edsr-baseline-x4.safetensors"
BUNDLED_TRAIN = ASSETS / "train" / "T91"
DEFAULT_STUDENT = "edsr-baseline:n_feats=32"  # EDSR-baseline at half width: about 4x fewer parameters
SPEED_LR = 64  # LR side of the timing input of the final comparison

# The main job on the bundled defaults (12 T91 images, the demo teacher, a half-width student) must
# show distillation working in a few minutes on 2 CPU cores: the recipe and its measured
# alternatives are in docs/distill.md, "The main job".
DEMO = {"steps": 500, "patch": 32, "lr": 1e-3, "schedule": "cosine", "warmup": 50, "val_every": 300}


def demo_defaults(method: str | None, options: dict) -> str:
    """Fill the demo's values into the options left unset; a one-line description of what was set."""
    from .registry import get_method

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
        from .registry import build_distiller

        m = self.cfg.method
        init_report = load_init(student, m.init, log=self.log, teacher=self.teacher) if m.init else None
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
                raise SrkdError(f"bad scale '{value}' in student spec '{spec}'") from None
    return found


def resolve_teacher(ref: str | None):
    """(ModelFile, reference to record). Missing files give one clear line."""
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


def load_init(student, path: str, log=None, teacher=None):
    """Warm start, also from another scale: all but the upsampler loads (srkd.distill.init).

    ``teacher-slice`` copies the teacher's first-channel slice instead (srkd.compress).
    """
    if str(path) == "teacher-slice":
        from ..compress import init_from_teacher_slice
        from .init import InitReport

        info = init_from_teacher_slice(student, teacher)
        report = InitReport("teacher-slice", teacher.arch, tuple(teacher.scales), loaded=list(student.state_dict()))
        if log is not None:
            log(f"init: the teacher's {info['width']:g}-width channel slice ({len(report.loaded)} tensors)")
        return report
    from .init import init_student

    return init_student(student, path, log=log)


def prepare(options: dict, config_file, sets, resume: bool, *, method=None, teacher=None, student=None, init=None,
            teacher_precision=None) -> Job:
    """Resolve everything and validate the method on the real networks before any file is written."""
    from .registry import build_distiller, get_method
    from ..train import config as C
    from ..train.engine import build_student
    
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
    cfg = C.from_options(options, config_file, config_sets, resume)
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

    teacher_file, teacher_ref, teacher_hash = resolve_teacher(teacher or m.teacher)
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
        load_init(probe_student, cfg.method.init, log=None, teacher=t_model)
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


def _macs(model, scale: int) -> int:
    import copy

    from ..complexity import count_macs

    meta = copy.deepcopy(model).to("meta")
    return count_macs(meta, (720 // scale, 1280 // scale))


def compare(job: Job, student_path) -> dict:
    """Teacher vs student: parameters, multiply-adds, measured speed, validation PSNR/SSIM, and bicubic.

    Speed is :func:`srkd.complexity.measure_seconds_many` (as ``srkd compress``): the best of 3
    interleaved forwards of a ``SPEED_LR`` x ``SPEED_LR`` LR input.
    """
    from ..complexity import count_params, measure_seconds_many
    from ..io.checkpoint import load_model_file
    from ..precision import resolve_device

    cfg = job.cfg
    teacher = job.teacher.eval()
    student = load_model_file(student_path).model.eval()
    device = resolve_device(cfg.train.device)
    precision = cfg.val.precision
    seconds = measure_seconds_many([teacher, student], (SPEED_LR, SPEED_LR), 3, precision, device)
    rows = {}
    for (role, model), sec in zip((("teacher", teacher), ("student", student)), seconds):
        rows[role] = {"params": count_params(model), "macs": _macs(model, model.scale), "seconds": sec, "val": {}}
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
    return out


# ----------------------------------------------------------------------------------- the API


@dataclass
class DistillResult:
    """What :func:`distill` returns: the training result, the teacher comparison, the job."""

    train: object  # srkd.train.state.TrainResult
    job: Job
    comparison: dict | None = None
    export: Path | None = None
    demo: str = ""  # the demo defaults that were filled in, if any

    @property
    def model_path(self) -> Path | None:
        return self.train.model_path


def _param_text(value) -> str:
    return ",".join(str(v) for v in value) if isinstance(value, (list, tuple)) else str(value)


def run_job(job: Job, *, overwrite: bool = False, resume: bool = False, progress: bool = True, console=None,
            export: str | Path | None = None, compare_models: bool = True) -> DistillResult:
    """Train a prepared :class:`Job` on the shared engine; then (rank 0) compare and export."""
    import os

    from ..train.engine import train

    result = train(job.cfg, job.factory, overwrite=overwrite, resume=resume, progress=progress, console=console)
    out = DistillResult(train=result, job=job)
    main = int(os.environ.get("RANK", "0")) == 0
    if not main or result.model_path is None or result.interrupted is not None:
        return out
    if compare_models or export is not None:
        out.comparison = compare(job, result.model_path)
    if export is not None:
        from ..io.checkpoint import load_model_file, save_model

        mf = load_model_file(result.model_path)
        out.export = save_model(mf.model, export, provenance={**mf.provenance, "comparison": out.comparison},
                                overwrite=overwrite)
    return out


def distill(method: str | None = None, *, teacher: str | None = None, student: str | None = None,
            init: str | None = None, params: dict | None = None, config: str | Path | None = None,
            sets: list[str] | None = None, teacher_precision: str | None = None, resume: bool = False,
            overwrite: bool = False, export: str | Path | None = None, compare_models: bool = True,
            progress: bool = True, console=None, log=None, **engine) -> DistillResult:
    """Distil ``teacher`` into ``student`` with ``method``; what ``srkd distill`` runs.

    ``params``: the method's hyper-parameters (``{"lambda_kd": 0.5, "taps": ("body1", "body3")}``);
    ``engine``: any engine option by its command-line name (``steps=500, batch=16, out="runs/kd"``,
    see ``srkd.train.config.OPTION_KEYS``); ``sets``: ``SECTION.KEY=VALUE`` strings for the rest.
    With nothing but a method, the bundled demo runs (teacher, data, student and recipe; see
    docs/distill.md, "The main job"). Returns a :class:`DistillResult`; the student is
    ``result.model_path``. Raises :class:`~srkd.errors.SrkdError` for anything the user can fix.
    """
    from ..io.files import check_writable
    from ..train import config as C

    options = C.engine_options(engine, resume, overwrite)
    demo = ""
    if not (options.get("data") or teacher or student or init or config or resume or sets or params):
        demo = demo_defaults(method, options)
        init = options.pop("init", None)
    hp = [f"{k}={_param_text(v)}" for k, v in (params or {}).items()] + list(sets or [])
    job = prepare(options, config, hp, resume, method=method, teacher=teacher, student=student, init=init,
                  teacher_precision=teacher_precision)
    export = Path(export) if export is not None else None
    if export is not None:
        check_writable(export, overwrite)
    job.log = log
    out = run_job(job, overwrite=overwrite, resume=resume, progress=progress, console=console, export=export,
                  compare_models=compare_models)
    out.demo = demo
    return out
