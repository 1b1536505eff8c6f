"""Typed training configuration: dataclasses, YAML loading, validation.

Every option lives in one of the sections below, so a YAML file reads like the run it describes::

    model: {arch: edsr-baseline, scale: 4}
    data: {sources: [data/train/T91, data/train/BSD200], patch: 48, batch: 16}
    optim: {lr: 1.0e-4, betas: [0.9, 0.999]}
    schedule: {kind: multistep, milestones: [0.6667], gamma: 0.5}
    train: {steps: 20000, precision: auto, ema: 0.999}
    val: {sets: [set5], every: 1000}
    run: {out: runs/edsr-baseline-x4, ckpt_every: 500, keep: 3}

Unknown or misspelt keys and out-of-range values raise :class:`SrkdError` naming the valid
choices, because a silently ignored typo (BasicSR's ``opt.get`` style) costs a whole run.
The defaults are the field's standard recipe (EDSR-PyTorch / BasicSR: Adam 1e-4, batch 16, LR
patch 48, L1, learning rate halved at 2/3 of the run) with its milestones expressed as fractions
of ``train.steps`` so that they scale with the run length.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_type_hints

import yaml

from ..errors import SrkdError
from ..precision import PRECISIONS
from ..values import CoerceError, coerce

LOSSES = ("l1", "l2", "charbonnier")
SCHEDULES = ("multistep", "cosine", "constant")
CACHE_MODES = ("auto", "memory", "memmap")


@dataclass
class ModelConfig:
    """The network being trained (the student, for distillation)."""

    arch: str = "edsr-baseline"  # preset family (edsr-baseline), preset (edsr-baseline-x4) or spec (edsr:n_feats=32)
    scale: int = 4


@dataclass
class DataConfig:
    """Training pairs and how patches are drawn from them."""

    sources: list[str] = field(default_factory=list)  # HR folders, DIV2K roots or paired list files
    patch: int = 48  # LR patch side; the HR patch is patch * scale
    batch: int = 16  # per process (per GPU under torchrun)
    augment: bool = True  # random flips and 90-degree rotations
    workers: int = 0  # background threads assembling batches (0: in the training thread)
    cache: str = "auto"  # decoded images: memory, memmap (shared file in the cache), auto (by size)


@dataclass
class OptimConfig:
    lr: float = 1e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    weight_decay: float = 0.0
    loss: str = "l1"  # pixel loss to HR: l1, l2 or charbonnier
    clip_grad: float = 0.0  # max global gradient norm; 0 disables clipping


@dataclass
class ScheduleConfig:
    kind: str = "multistep"  # multistep, cosine or constant
    milestones: list[float] = field(default_factory=lambda: [2 / 3])  # fractions of train.steps (multistep)
    gamma: float = 0.5  # multistep factor at each milestone
    warmup: int = 0  # linear warm-up steps from 0 to optim.lr
    min_lr: float = 0.0  # cosine floor


@dataclass
class TrainLoopConfig:
    steps: int = 20000
    precision: str = "auto"  # auto (bf16 where the hardware has it), fp32, bf16 or fp16
    channels_last: bool = True
    ema: float = 0.999  # EMA decay of parameters and buffers; 0 disables (the raw model is exported)
    seed: int = 0
    device: str = "auto"  # auto, cpu, cuda, cuda:N
    threads: int = 0  # torch CPU threads; 0: available cores minus data workers (per process)
    log_every: int = 1  # steps between metrics.jsonl loss records


@dataclass
class ValConfig:
    sets: list[str] = field(default_factory=lambda: ["set5"])  # benchmark names; empty: no validation
    every: int = 1000  # steps between validations (and always at the end)
    final_sets: list[str] = field(default_factory=list)  # scored once more at the end only (e.g. the large sets)
    precision: str = "fp32"  # precision of validation inference (fp32 matches `srkd eval`'s default)
    data_root: str | None = None  # default: $SRKD_DATA (Set5 falls back to the bundled copy)


@dataclass
class RunConfig:
    out: str = ""  # run folder
    ckpt_every: int = 500  # steps between training checkpoints (and always at the end)
    keep: int = 3  # last K checkpoints kept, plus the best by validation PSNR
    tensorboard: bool = True  # write event files when the optional tensorboard package is installed
    label: str = ""  # free-form name of the run (srkd bench: the protocol entry); not part of its identity
    protocol: str = ""  # hash of the srkd bench protocol the run belongs to; not part of its identity


@dataclass
class MethodConfig:
    """How the loss is made. ``scratch`` is plain supervised training (teacher-train)."""

    name: str = "scratch"
    teacher: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    teacher_precision: str = "auto"  # precision of the frozen teacher's no-grad forward (auto: fastest)
    init: str | None = None  # student weights to start from (a model file) instead of random init
    teacher_sha256: str = ""  # sha256 of the teacher file (set by srkd distill; part of the run's identity)


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainLoopConfig = field(default_factory=TrainLoopConfig)
    val: ValConfig = field(default_factory=ValConfig)
    run: RunConfig = field(default_factory=RunConfig)
    method: MethodConfig = field(default_factory=MethodConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)


# Options that may change between the run that wrote a folder and the run resuming it: where and
# how fast it runs, not what it computes. Everything else must match, or the run is refused.
RESUME_FREE = {
    # the teacher is identified by method.teacher_sha256, so the same file found at another path
    # (another checkout, another machine) is the same run
    "method.teacher",
    "run.out", "run.tensorboard", "run.label", "run.protocol", "data.workers", "data.cache", "train.threads", "train.device", "val.data_root",
}


def _hints(cls) -> dict:
    return get_type_hints(cls)


def _coerce(value: Any, typ, where: str) -> Any:
    """Convert a YAML/CLI value to the annotated type (srkd.values), or raise a one-line SrkdError."""
    try:
        return coerce(value, typ, where, build=_build)
    except CoerceError as exc:
        raise SrkdError(f"{exc.where} must be {exc.expected}, got {exc.value!r}") from None


def _unknown_key(key: str, valid: list[str], where: str) -> SrkdError:
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    name = f"{where}.{key}" if where else key
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    place = f"'{where}'" if where else "the top level"
    return SrkdError(f"unknown config key '{name}'{hint}; valid keys in {place}: {', '.join(valid)}")


def _build(cls, raw: Any, where: str):
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise SrkdError(f"config section '{where or 'top level'}' must be a mapping, got {raw!r}")
    hints = _hints(cls)
    valid = [f.name for f in fields(cls)]
    kwargs = {}
    for key, value in raw.items():
        if key not in valid:
            raise _unknown_key(str(key), valid, where)
        kwargs[key] = _coerce(value, hints[key], f"{where}.{key}" if where else key)
    return cls(**kwargs)


def from_dict(raw: dict) -> TrainConfig:
    cfg = _build(TrainConfig, raw, "")
    validate(cfg)
    return cfg


def load_yaml(path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise SrkdError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise SrkdError(f"{path} is not valid YAML{at}: {getattr(exc, 'problem', exc)}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise SrkdError(f"{path}: a training config is a mapping of sections ({', '.join(f.name for f in fields(TrainConfig))})")
    return raw


def set_option(raw: dict, dotted: str, value: Any) -> None:
    """Set ``section.key`` in a raw config dict (CLI overrides); the key is checked on build."""
    section, _, key = dotted.partition(".")
    raw.setdefault(section, {})
    if not isinstance(raw[section], dict):
        raise SrkdError(f"config section '{section}' must be a mapping")
    raw[section][key] = value


def merge(base: dict, override: dict) -> dict:
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in base.items()}
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "params":
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def _need(cond: bool, msg: str) -> None:
    if not cond:
        raise SrkdError(msg)


def _choice(value: str, choices, where: str) -> None:
    _need(value in choices, f"{where} must be one of {', '.join(choices)}, got '{value}'")


def validate(cfg: TrainConfig) -> None:
    """Check values that types alone do not constrain. Raises SrkdError on the first problem."""
    _need(cfg.model.scale in (2, 3, 4, 8), f"model.scale must be 2, 3, 4 or 8, got {cfg.model.scale}")
    _need(bool(cfg.model.arch.strip()), "model.arch is empty: give a preset (edsr-baseline) or a spec (edsr:n_feats=32)")
    d = cfg.data
    _need(d.patch >= 4, f"data.patch must be at least 4 LR pixels, got {d.patch}")
    _need(d.batch >= 1, f"data.batch must be at least 1, got {d.batch}")
    _need(0 <= d.workers <= 8, f"data.workers must be between 0 and 8, got {d.workers}")
    _choice(d.cache, CACHE_MODES, "data.cache")
    o = cfg.optim
    _need(o.lr > 0, f"optim.lr must be positive, got {o.lr}")
    _need(len(o.betas) == 2 and all(0 <= b < 1 for b in o.betas), f"optim.betas must be two numbers in [0, 1), got {o.betas}")
    _need(o.eps > 0, f"optim.eps must be positive, got {o.eps}")
    _need(o.weight_decay >= 0, f"optim.weight_decay must be >= 0, got {o.weight_decay}")
    _choice(o.loss, LOSSES, "optim.loss")
    _need(o.clip_grad >= 0, f"optim.clip_grad must be >= 0 (0 disables), got {o.clip_grad}")
    s = cfg.schedule
    _choice(s.kind, SCHEDULES, "schedule.kind")
    _need(all(0 < m < 1 for m in s.milestones), f"schedule.milestones are fractions of train.steps in (0, 1), got {s.milestones}")
    _need(list(s.milestones) == sorted(s.milestones), f"schedule.milestones must be increasing, got {s.milestones}")
    _need(0 < s.gamma <= 1, f"schedule.gamma must be in (0, 1], got {s.gamma}")
    _need(s.warmup >= 0, f"schedule.warmup must be >= 0, got {s.warmup}")
    _need(0 <= s.min_lr <= o.lr, f"schedule.min_lr must be between 0 and optim.lr, got {s.min_lr}")
    t = cfg.train
    _need(t.steps >= 1, f"train.steps must be at least 1, got {t.steps}")
    _need(s.warmup < t.steps, f"schedule.warmup ({s.warmup}) must be shorter than train.steps ({t.steps})")
    _choice(t.precision, PRECISIONS, "train.precision")
    _need(t.ema == 0 or 0 < t.ema < 1, f"train.ema must be a decay in (0, 1) or 0 to disable, got {t.ema}")
    _need(t.seed >= 0, f"train.seed must be >= 0, got {t.seed}")
    _need(t.threads >= 0, f"train.threads must be >= 0 (0: automatic), got {t.threads}")
    _need(t.log_every >= 1, f"train.log_every must be at least 1, got {t.log_every}")
    _need(t.device == "auto" or t.device == "cpu" or t.device.startswith("cuda") or t.device == "mps",
          f"train.device must be auto, cpu, cuda, cuda:N or mps, got '{t.device}'")
    v = cfg.val
    _need(v.every >= 1, f"val.every must be at least 1, got {v.every}")
    _choice(v.precision, PRECISIONS[1:], "val.precision")
    r = cfg.run
    _need(r.ckpt_every >= 1, f"run.ckpt_every must be at least 1, got {r.ckpt_every}")
    _need(r.keep >= 1, f"run.keep must be at least 1, got {r.keep}")
    _need(bool(cfg.method.name), "method.name is empty")
    _choice(cfg.method.teacher_precision, PRECISIONS, "method.teacher_precision")


def resolve_paths(cfg: TrainConfig) -> TrainConfig:
    """Absolute data paths, so that a resumed run from another working directory compares equal."""
    cfg.data.sources = [str(Path(os.path.expanduser(s)).resolve()) for s in cfg.data.sources]
    if cfg.run.out:
        cfg.run.out = str(Path(os.path.expanduser(cfg.run.out)).resolve())
    return cfg


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and k != "params":
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def differences(a: TrainConfig, b: TrainConfig) -> list[str]:
    """Options that change what a run computes, as ``key: old -> new`` strings."""
    fa, fb = _flatten(a.to_dict()), _flatten(b.to_dict())
    return [f"{k}: {fa.get(k)!r} -> {fb.get(k)!r}" for k in sorted(set(fa) | set(fb))
            if k not in RESUME_FREE and fa.get(k) != fb.get(k)]


def fingerprint(cfg: TrainConfig) -> str:
    """Hash of the options that define the computation (what ``differences`` compares).

    Options at their default value are left out, so that an option added by a later srkd
    version (whose default keeps the old behaviour) does not orphan a run in progress; a
    changed default is still caught, by :func:`differences` on the stored ``config.yaml``.
    """
    defaults = _flatten(TrainConfig().to_dict())
    flat = {k: v for k, v in _flatten(cfg.to_dict()).items()
            if k not in RESUME_FREE and (k not in defaults or defaults[k] != v)}
    return hashlib.sha256(json.dumps(flat, sort_keys=True, default=str).encode()).hexdigest()[:16]


def option_help() -> list[tuple[str, str, str]]:
    """(dotted key, type, default) of every option, for docs and ``--help``."""
    rows = []
    for sec in fields(TrainConfig):
        cls = _hints(TrainConfig)[sec.name]
        default = cls()
        for f in fields(cls):
            typ = _hints(cls)[f.name]
            rows.append((f"{sec.name}.{f.name}", getattr(typ, "__name__", str(typ)), repr(getattr(default, f.name))))
    return rows


# ------------------------------------------------------------------- options by their CLI names

# The engine's options by the names `srkd teacher-train`, `srkd distill`, srkd.train() and
# srkd.distill() give them, and the config keys they set (srkd/cli/options.py declares the
# command-line side once for both commands).
OPTION_KEYS = {
    "data": "data.sources", "val": "val.sets", "steps": "train.steps", "out": "run.out", "batch": "data.batch",
    "patch": "data.patch", "lr": "optim.lr", "schedule": "schedule.kind", "warmup": "schedule.warmup",
    "clip_grad": "optim.clip_grad", "precision": "train.precision", "device": "train.device", "ema": "train.ema",
    "val_every": "val.every", "ckpt_every": "run.ckpt_every", "keep": "run.keep", "seed": "train.seed",
    "workers": "data.workers", "threads": "train.threads", "augment": "data.augment",
}
# teacher-train's own: the network and its loss (a distillation takes them from the teacher and method)
NETWORK_KEYS = {"arch": "model.arch", "scale": "model.scale", "loss": "optim.loss"}


def engine_options(engine: dict, resume: bool = False, overwrite: bool = False) -> dict:
    """Every :data:`OPTION_KEYS` name -> the value in ``engine`` (None if absent), for the Python API;
    an unknown name or ``resume`` with ``overwrite`` is a one-line error."""
    unknown = sorted(set(engine) - set(OPTION_KEYS))
    if unknown:
        raise SrkdError(f"unknown option(s) {', '.join(unknown)}: engine options are {', '.join(OPTION_KEYS)}")
    if resume and overwrite:
        raise SrkdError("resume and overwrite contradict each other; pass one")
    return {name: engine.get(name) for name in OPTION_KEYS}


def from_options(options: dict, config_file=None, sets: list[str] | None = None, resume: bool = False) -> TrainConfig:
    """Defaults <- a run folder's config (``resume``) <- ``config_file`` <- ``sets`` <- ``options``.

    ``options``: option name (:data:`OPTION_KEYS`, :data:`NETWORK_KEYS`) -> value, None when not
    given; ``sets``: ``SECTION.KEY=VALUE`` strings, values parsed as YAML.
    """
    raw: dict = {}
    out = options.get("out")
    if resume and out is not None and (Path(out) / "config.yaml").is_file():
        raw = load_yaml(Path(out) / "config.yaml")
    if config_file is not None:
        raw = merge(raw, load_yaml(config_file))
    for item in sets or []:
        key, eq, value = item.partition("=")
        if not eq or "." not in key:
            raise SrkdError(f"--set expects SECTION.KEY=VALUE (e.g. optim.betas=0.9,0.99), got '{item}'")
        try:
            parsed = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError:
            parsed = value
        set_option(raw, key.strip(), parsed)
    for name, key in {**OPTION_KEYS, **NETWORK_KEYS}.items():
        value = options.get(name)
        if value is None or (isinstance(value, list) and not value and name != "val"):
            continue
        if name == "val":
            if not value:
                continue
            value = [v.strip() for v in ",".join(value if isinstance(value, (list, tuple)) else [value]).split(",")
                     if v.strip() and v.strip().lower() != "none"]
        if name == "data":
            value = [str(v) for v in (value if isinstance(value, (list, tuple)) else [value])]
        set_option(raw, key, value)
    return from_dict(raw)
