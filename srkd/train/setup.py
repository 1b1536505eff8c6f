"""Setting a training run up: the config checked, the student built under its own seed, the
method, optimiser and EMA, and the resume from the latest valid checkpoint."""

from __future__ import annotations

import copy
import random
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import SrkdError
from . import config as C
from .dist import Dist, train_precision
from .ema import EMA
from .export import finish
from .method import Method, Supervised
from .runs import RunDir, load_state
from .state import EngineState, Outcome, RunContext, TrainResult

METHOD_SEED_OFFSET = 1_000_003  # the methods' random stream is seeded apart from the student's initialisation


def build_student(model: C.ModelConfig) -> nn.Module:
    """A randomly initialised network from ``arch`` (family, preset or spec) at ``scale``.

    ``edsr-baseline`` with scale 4 is the preset ``edsr-baseline-x4``; a spec such as
    ``edsr:n_feats=32,n_resblocks=8`` takes the scale from ``scale``.
    """
    from ..models.registry import PRESETS, build_from_spec, parse_spec

    name, sep, rest = model.arch.partition(":")
    key = name.strip().lower()
    if f"{key}-x{model.scale}" in PRESETS:
        spec = f"{key}-x{model.scale}" + (sep + rest if rest else "")
    else:
        spec = model.arch
    arch, cfg = parse_spec(spec)
    given = cfg.get("scale")
    if given is not None and int(given) != model.scale:
        raise SrkdError(f"--arch {model.arch} is a x{given} configuration but --scale is {model.scale}")
    return build_from_spec(spec, scale=model.scale)


def check_config(cfg: C.TrainConfig, data: bool = False) -> C.TrainConfig:
    """Everything that can be checked before a run starts, as one-line errors; the resolved config.

    ``data``: also look the training sources up (train() finds them when it loads them).
    """
    C.validate(cfg)
    cfg = C.resolve_paths(copy.deepcopy(cfg))
    if not cfg.run.out:
        raise SrkdError("no run folder: give --out DIR")
    with torch.device("meta"):  # a bad --arch fails now, not after the data has been loaded
        build_student(cfg.model)
    if cfg.val.sets or cfg.val.final_sets:  # and an unknown or missing benchmark before the first validation, not at it
        from ..evaluate import open_dataset

        for name in [*cfg.val.sets, *cfg.val.final_sets]:
            open_dataset(name, cfg.model.scale, cfg.val.data_root)
    if data:
        from ..data.patches import discover

        for source in cfg.data.sources:
            if not discover(source, cfg.model.scale):
                raise SrkdError(f"no training images in {source}")
    return cfg


def _load_data(cfg: C.TrainConfig, d: Dist, show: bool, console, note):
    from ..data.patches import TrainingSet

    # rank 0 fills the LR / decoded caches first so the others only read them
    dataset = d.main_first(lambda: TrainingSet(cfg.data.sources, cfg.model.scale, cfg.data.patch, cfg.data.cache,
                                               progress=show))
    if dataset is None:
        dataset = TrainingSet(cfg.data.sources, cfg.model.scale, cfg.data.patch, cfg.data.cache, progress=False)
    if dataset.unreadable and d.main:
        first = dataset.unreadable[0][1]
        note(f"skipped {len(dataset.unreadable)} unreadable training image(s) of {dataset.n_files}: "
             + ", ".join(Path(f).name for f, _ in dataset.unreadable[:5]) + ("..." if len(dataset.unreadable) > 5 else "")
             + f" ({first})")
    if dataset.skipped and d.main:
        console.print(f"skipped {len(dataset.skipped)} of {dataset.n_files} training images smaller than the "
                      f"{cfg.data.patch}px LR patch")
    return dataset


def _build_method(cfg: C.TrainConfig, method_factory) -> tuple[Method, nn.Module]:
    # The student's initial weights come from a generator of their own, seeded by the run's seed
    # alone, and the batches are a pure function of (seed, step, rank) (srkd.data.patches). So
    # nothing a method draws (noise, crops, negatives, its adapters' initialisation) shifts either:
    # seed s gives every method the same initial student and the same batches, which is what
    # makes srkd bench's paired per-seed differences meaningful.
    seed = cfg.train.seed
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        student = build_student(cfg.model)
    # the global generators, for the method's own draws, on a stream apart from the student's
    method_seed = seed + METHOD_SEED_OFFSET
    torch.manual_seed(method_seed)
    np.random.seed(method_seed % 2**32)
    random.seed(method_seed)
    method = method_factory(student) if method_factory is not None else Supervised(student, cfg.optim.loss)
    if not isinstance(method, Method):
        raise TypeError(f"a training method must derive from srkd.train.method.Method, not {type(method).__name__}")
    return method, student


def _trainable_params(trainable: dict[str, nn.Module]) -> list[nn.Parameter]:
    params, seen = [], set()
    for m in trainable.values():
        for p in m.parameters():
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                params.append(p)
    return params


def setup(cfg, method_factory, overwrite, resume, progress, console, d: Dist, device, wall0):
    run = RunDir(cfg.run.out)

    def prepare():
        plan = run.plan(cfg, overwrite=overwrite, resume=resume)
        if plan.clear:
            run.clear()
        run.write_config(cfg)
        return plan

    # Rank 0 alone decides and writes; the others must not look at a half-written folder.
    plan = d.main_first(prepare, share=True)
    show = progress and d.main
    notes: list[str] = []

    def note(msg: str) -> None:
        notes.append(msg)
        if d.main:
            console.print(f"[yellow]warning:[/] {msg}")

    dataset = _load_data(cfg, d, show, console, note)
    method, student = _build_method(cfg, method_factory)
    trainable = dict(method.trainable_modules())
    if trainable.get("student") is not student:
        raise TypeError("the method's trainable_modules() must hold the student under 'student'")
    precision = train_precision(cfg.train.precision, device, student)
    method.to(device)
    if cfg.train.channels_last and device.type in ("cpu", "cuda"):
        method.to(memory_format=torch.channels_last)
    for m in method.frozen_modules().values():
        m.eval().requires_grad_(False)
    method.train()
    params = _trainable_params(trainable)
    optimizer = torch.optim.Adam(params, lr=cfg.optim.lr, betas=tuple(cfg.optim.betas), eps=cfg.optim.eps,
                                 weight_decay=cfg.optim.weight_decay, fused=(device.type == "cuda") or None)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    ema = EMA(student, cfg.train.ema) if cfg.train.ema > 0 else None
    state = EngineState(cfg, device, precision, d.rank, d.world, 0, ema.module if ema else None, optimizer)
    method.bind_engine(state)
    ctx = RunContext(cfg=cfg, run=run, d=d, device=device, precision=precision, method=method, student=student,
                     trainable=trainable, params=params, optimizer=optimizer, scaler=scaler, ema=ema, dataset=dataset,
                     state=state, fingerprint=C.fingerprint(cfg), console=console, show=show, wall0=wall0, notes=notes,
                     best=run.read_best() if not plan.fresh else None)
    return ctx, plan


def resume_from_checkpoint(ctx: RunContext) -> None:
    """Load the latest valid checkpoint (rank 0 picks it, every rank reads the same file)."""
    d, run = ctx.d, ctx.run
    chosen = None
    if d.main:
        chosen = run.latest_state(ctx.fingerprint, on_warning=lambda m: _note(ctx, m))
    if d.active:
        import torch.distributed as dist

        path_box = [str(run.ckpt_dir / f"step_{chosen['step']:08d}.pt") if d.main and chosen is not None else None]
        dist.broadcast_object_list([chosen["step"] if chosen is not None else None], src=0)
        dist.broadcast_object_list(path_box, src=0)
        if not d.main and path_box[0] is not None:
            chosen = run.read_checkpoint(Path(path_box[0]))
    if chosen is not None:
        load_state(ctx, chosen)
        ctx.start = int(chosen["step"])
        ctx.best = chosen.get("best")
        ctx.elapsed0 = float(chosen.get("elapsed", 0.0))
        if d.main:
            run.truncate_metrics(ctx.start)
            ctx.console.print(f"resuming {run.path} from step {ctx.start}")
    elif d.main:
        run.truncate_metrics(-1)  # no checkpoint survived: the log restarts with the run
    ctx.state.step = ctx.start


def _note(ctx: RunContext, msg: str) -> None:
    ctx.notes.append(msg)
    if ctx.d.main:
        ctx.console.print(f"[yellow]warning:[/] {msg}")


def already_complete(ctx: RunContext) -> TrainResult:
    import json

    try:
        previous = json.loads(ctx.run.summary_path.read_text())
    except (OSError, ValueError):
        previous = {}
    out = Outcome(step=ctx.start, last_loss=previous.get("final_loss"), val=previous.get("val") or {},
                  skip_export=ctx.run.model_path.is_file())
    result = finish(ctx, out, ctx.elapsed0)
    result.already_complete = True
    return result
