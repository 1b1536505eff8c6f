"""The training engine shared by ``srkd teacher-train`` and every distillation method.

One loop, iteration-based::

    batch = sample(seed, step, rank)                  # deterministic: the data position is the step
    terms = method(lr, hr)                            # dict of named, already weighted loss tensors
    loss = sum(terms)  -> backward -> (unscale, clip) -> Adam step -> EMA update
    every val.every steps: validate the EMA model with the exact `srkd eval` protocol
    every run.ckpt_every steps: atomic checkpoint (model, EMA, optimiser, scaler, RNGs, step)

The *method* is an ``nn.Module`` whose ``forward(lr, hr)`` returns the loss terms. It owns the
student (``trainable_modules()["student"]``), any adapters (other entries of
``trainable_modules()``, trained with the student and never exported) and frozen networks
(``frozen_modules()``: moved to the device, kept in eval mode, never in the optimiser or the
checkpoint). Optional hooks, all called when present:

* ``on_step_start(i)`` / ``on_step_end(i)``: around the i-th optimiser step (i counts from 0);
* ``bind_engine(state)``: receives the live :class:`EngineState` (step, EMA model, device ...);
* ``extra_state()`` / ``load_extra_state(d)``: non-trained state that must survive a resume
  (e.g. a history model), as a dict of tensors and plain values;
* ``log_values()``: extra scalars to log each step; ``describe()``: provenance for the export.

:class:`~srkd.distill.base.Distiller` implements this protocol; :class:`Supervised` is the
``teacher-train`` case (pixel loss to HR).

Under ``torchrun`` the method is wrapped in DistributedDataParallel (NCCL on CUDA, Gloo on
CPU). Each rank draws its own batches (the rank is part of the sampling seed), every rank holds
identical weights and EMA, and only rank 0 writes files.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import math
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import SrkdError
from . import config as C
from ..precision import image_convs_fp32
from .runs import STATE_FORMAT, STATE_VERSION, MetricsLog, RunDir, rng_state, set_rng_state

# ----------------------------------------------------------------------------------- the model

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


def _pixel_loss(kind: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    if kind == "l1":
        return lambda a, b: F.l1_loss(a.float(), b.float())
    if kind == "l2":
        return lambda a, b: F.mse_loss(a.float(), b.float())
    if kind == "charbonnier":
        return lambda a, b: torch.sqrt((a.float() - b.float()) ** 2 + 1e-6).mean()
    raise SrkdError(f"unknown pixel loss '{kind}' (use l1, l2 or charbonnier)")


class Supervised(nn.Module):
    """Plain supervised training (``teacher-train``, the ``scratch`` baseline): loss(S(LR), HR)."""

    def __init__(self, student: nn.Module, loss: str = "l1"):
        super().__init__()
        self.student = student
        self.loss_kind = loss
        self._loss = _pixel_loss(loss)

    def forward(self, lr: torch.Tensor, hr: torch.Tensor) -> dict[str, torch.Tensor]:
        return {self.loss_kind: self._loss(self.student(lr), hr)}

    def trainable_modules(self) -> dict[str, nn.Module]:
        return {"student": self.student}

    def frozen_modules(self) -> dict[str, nn.Module]:
        return {}

    def describe(self) -> dict:
        return {"method": "scratch", "params": {"loss": self.loss_kind}}


# ----------------------------------------------------------------------------------------- EMA


class EMA:
    """Exponential moving average of a model's parameters *and* buffers.

    The decay ramps up as ``min(decay, (1 + n) / (10 + n))`` over the first updates: with a
    constant 0.999 (BasicSR) the average of a short run is still mostly the random
    initialisation (0.999^300 = 0.74 after 300 steps); after a few thousand steps the ramp no
    longer matters. Integer buffers are copied.
    """

    def __init__(self, model: nn.Module, decay: float):
        self.decay = float(decay)
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        src = model.state_dict()
        floats_e, floats_s = [], []
        for k, e in self.module.state_dict().items():
            s = src[k].detach()
            if e.dtype.is_floating_point:
                floats_e.append(e)
                floats_s.append(s.to(e.dtype))
            else:
                e.copy_(s)
        if floats_e:
            torch._foreach_lerp_(floats_e, floats_s, 1.0 - d)

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "updates": self.updates, "decay": self.decay}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])


# ------------------------------------------------------------------------------------ schedule


def lr_at(cfg: C.TrainConfig, step: int) -> float:
    """Learning rate used for optimiser step ``step`` (1-based)."""
    base, s, total = cfg.optim.lr, cfg.schedule, cfg.train.steps
    if s.warmup and step <= s.warmup:
        return base * step / s.warmup
    if s.kind == "constant":
        return base
    if s.kind == "multistep":
        passed = sum(1 for m in s.milestones if step > round(m * total))
        return base * s.gamma ** passed
    span = max(total - s.warmup, 1)
    t = min(max(step - s.warmup - 1, 0) / span, 1.0)
    return s.min_lr + (base - s.min_lr) * 0.5 * (1.0 + math.cos(math.pi * t))


# --------------------------------------------------------------------------------- processes


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1
    owns_group: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def barrier(self) -> None:
        if self.active:
            import torch.distributed as dist

            dist.barrier()

    def main_first(self, fn, share: bool = False):
        """Run ``fn`` on rank 0 only; its SrkdError is raised on every rank, and with ``share`` its
        (picklable) result is sent to every rank, else the other ranks get None.

        Without this, an error on rank 0 would leave the other ranks waiting in a collective.
        """
        if not self.active:
            return fn()
        import torch.distributed as dist

        result, error = None, None
        if self.main:
            try:
                result = fn()
            except SrkdError as exc:
                error = str(exc)
        box = [error, result if share else None]
        dist.broadcast_object_list(box, src=0)
        if box[0] is not None:
            raise SrkdError(box[0])
        return result if self.main else box[1]


def setup_distributed(device_pref: str) -> Dist:
    """Join the torchrun process group if launched under torchrun (WORLD_SIZE > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch.distributed as dist

    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    use_cuda = device_pref != "cpu" and torch.cuda.is_available()
    owns = False
    if not dist.is_initialized():
        if use_cuda:
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
        owns = True
    return Dist(dist.get_rank(), dist.get_world_size(), local_rank, local_world, owns)


def _resolve_device(pref: str, d: Dist) -> torch.device:
    from ..precision import resolve_device

    device = resolve_device(pref)
    if device.type == "cuda" and d.active:
        device = torch.device("cuda", d.local_rank)
    return device


def _resolve_precision(pref: str, device: torch.device, model: nn.Module) -> str:
    from ..precision import resolve_precision
    from ..models.registry import describe

    if device.type == "mps" and pref == "auto":
        return "fp32"  # autocast training on MPS is not dependable across PyTorch versions
    precision = resolve_precision(pref, device)
    desc = describe(model)
    if pref == "auto" and precision == "bf16" and not desc.supports_bf16:
        return "fp32"  # measured to lose more than 0.05 dB in bf16 (its spec)
    if precision == "bf16" and not desc.supports_bf16:
        raise SrkdError(f"{desc.arch} does not support bf16; use --precision fp32")
    if precision == "fp16" and not desc.supports_fp16:
        raise SrkdError(f"{desc.arch} does not support fp16; use --precision bf16 or fp32")
    return precision


def _cpu_threads(cfg: C.TrainConfig, d: Dist) -> int:
    if cfg.train.threads:
        return cfg.train.threads
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    env = os.environ.get("OMP_NUM_THREADS")
    if env and env.isdigit() and int(env) > 0:
        cores = min(cores, int(env) * d.local_world)
    # Oversubscribing cores makes every convolution wait on the slowest thread (several-fold
    # slower steps), so torch threads plus data threads never exceed this process's share.
    return max(1, cores // d.local_world - cfg.data.workers)


# --------------------------------------------------------------------------------- the engine


@dataclass
class EngineState:
    """What a method's hooks can see of the running engine."""

    config: C.TrainConfig
    device: torch.device
    precision: str
    rank: int
    world: int
    step: int = 0
    ema: nn.Module | None = None
    optimizer: torch.optim.Optimizer | None = None


@dataclass
class TrainResult:
    run_dir: Path
    model_path: Path | None
    step: int
    steps: int
    seconds: float
    train_seconds: float
    steps_per_second: float
    data_fraction: float
    final_loss: float | None
    val: dict = field(default_factory=dict)  # dataset -> {"psnr", "ssim"} of the last validation
    best: dict | None = None
    interrupted: int | None = None  # the signal number that stopped the run
    already_complete: bool = False
    precision: str = "fp32"
    device: str = "cpu"
    world: int = 1
    notes: list[str] = field(default_factory=list)


def _state_hash(module: nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in sorted(module.state_dict().items()):
        h.update(k.encode())
        t = v.detach().to("cpu")
        h.update((t.float() if t.dtype == torch.bfloat16 else t).numpy().tobytes())
    return h.hexdigest()[:16]


class _Stop:
    """SIGINT/SIGTERM set a flag; the loop finishes its step, checkpoints and returns."""

    def __init__(self):
        self.signum: int | None = None
        self._old = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # second Ctrl-C: stop now, without the checkpoint
        self.signum = signum

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        return False


class _Display:
    """Rich progress bar on a terminal; plain periodic lines otherwise (logs, nohup)."""

    def __init__(self, console, total: int, start: int, enabled: bool):
        self.console, self.total, self.enabled = console, total, enabled
        self.bar = None
        self.last_line, self.last_step = time.monotonic(), start
        self.fields = {"loss": "-", "lr": "-", "val": "-", "ips": "-"}
        if enabled and console.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self.bar = Progress(
                TextColumn("[bold]train[/]"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[ips]} it/s"),
                TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), TextColumn("loss {task.fields[loss]}"),
                TextColumn("lr {task.fields[lr]}"), TextColumn("val {task.fields[val]}"), console=console,
            )
            self.bar.start()
            self.task = self.bar.add_task("train", total=total, completed=start, **self.fields)

    def update(self, step: int, **fields) -> None:
        self.fields.update(fields)
        if self.bar is not None:
            self.bar.update(self.task, completed=step, **fields)
        elif self.enabled and step != self.last_step and (time.monotonic() - self.last_line > 60 or step == self.total):
            self.last_line, self.last_step = time.monotonic(), step
            f = self.fields
            self.console.print(f"step {step}/{self.total}  {f['ips']} it/s  loss {f['loss']}  lr {f['lr']}  val {f['val']}")

    def print(self, msg: str) -> None:
        if self.enabled:
            self.console.print(msg)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


def _batch_tensors(lr_np, hr_np, device: torch.device, channels_last: bool):
    # NHWC uint8 -> permuted view is already channels_last in memory; converting on the device
    # moves a quarter of the bytes of a float batch.
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    lr = torch.from_numpy(lr_np).to(device, non_blocking=True).permute(0, 3, 1, 2)
    hr = torch.from_numpy(hr_np).to(device, non_blocking=True).permute(0, 3, 1, 2)
    lr = lr.to(torch.float32, memory_format=fmt).div_(255.0)
    hr = hr.to(torch.float32, memory_format=fmt).div_(255.0)
    return lr, hr


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


def train(
    cfg: C.TrainConfig,
    method_factory: Callable[[nn.Module], nn.Module] | None = None,
    *,
    overwrite: bool = False,
    resume: bool = False,
    progress: bool = True,
    console=None,
) -> TrainResult:
    """Train according to ``cfg``; the method is ``method_factory(student)`` (default: supervised).

    Re-running with the same configuration on an existing run folder resumes it exactly; a
    different configuration is refused unless ``overwrite``.
    """
    from rich.console import Console

    cfg = check_config(cfg)
    console = console or Console()
    wall0 = time.perf_counter()
    d = setup_distributed(cfg.train.device)
    from ..io.files import FolderLock

    try:
        # one process per run folder: a second srkd on the same --out is refused (rank 0 holds it)
        with FolderLock(cfg.run.out) if d.main else contextlib.nullcontext():
            return _train(cfg, method_factory, overwrite, resume, progress, console, d, wall0)
    finally:
        if d.owns_group:
            import torch.distributed as dist

            with contextlib.suppress(Exception):
                dist.destroy_process_group()


def _train(cfg, method_factory, overwrite, resume, progress, console, d: Dist, wall0) -> TrainResult:
    from ..data.patches import Batches, TrainingSet

    run = RunDir(cfg.run.out)

    def prepare():
        plan = run.plan(cfg, overwrite=overwrite, resume=resume)
        if plan.clear:
            run.clear()
        run.write_config(cfg)
        return plan

    # Rank 0 alone decides and writes; the others must not look at a half-written folder.
    plan = d.main_first(prepare, share=True)
    fingerprint = C.fingerprint(cfg)
    show = progress and d.main
    notes: list[str] = []

    def note(msg: str) -> None:
        notes.append(msg)
        if d.main:
            console.print(f"[yellow]warning:[/] {msg}")

    device = _resolve_device(cfg.train.device, d)
    if device.type == "cpu":
        torch.set_num_threads(_cpu_threads(cfg, d))

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

    # ---- model, method, optimiser (seeded: the initialisation is part of the run's identity)
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
    import random

    random.seed(method_seed)
    method = method_factory(student) if method_factory is not None else Supervised(student, cfg.optim.loss)
    trainable = dict(method.trainable_modules())
    if trainable.get("student") is not student:
        raise TypeError("the method's trainable_modules() must hold the student under 'student'")
    frozen = dict(getattr(method, "frozen_modules", lambda: {})())
    precision = _resolve_precision(cfg.train.precision, device, student)
    channels_last = cfg.train.channels_last and device.type in ("cpu", "cuda")
    method.to(device)
    if channels_last:
        method.to(memory_format=torch.channels_last)
    for m in frozen.values():
        m.eval().requires_grad_(False)
    method.train()

    params, seen = [], set()
    for m in trainable.values():
        for p in m.parameters():
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                params.append(p)
    betas = tuple(cfg.optim.betas)
    fused = device.type == "cuda"
    optimizer = torch.optim.Adam(params, lr=cfg.optim.lr, betas=betas, eps=cfg.optim.eps,
                                 weight_decay=cfg.optim.weight_decay, fused=fused or None)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    ema = EMA(student, cfg.train.ema) if cfg.train.ema > 0 else None
    state = EngineState(cfg, device, precision, d.rank, d.world, 0, ema.module if ema else None, optimizer)
    if hasattr(method, "bind_engine"):
        method.bind_engine(state)

    # ---- resume
    start, best, elapsed0 = 0, run.read_best() if not plan.fresh else None, 0.0
    if not plan.fresh:
        chosen = None
        if d.main:
            ck = run.latest_state(fingerprint, on_warning=note)
            chosen = ck
        step_box = [chosen["step"] if chosen is not None else None]
        path_box = [None]
        if d.active:
            import torch.distributed as dist

            if d.main and chosen is not None:
                path_box = [str(run.ckpt_dir / f"step_{chosen['step']:08d}.pt")]
            dist.broadcast_object_list(step_box, src=0)
            dist.broadcast_object_list(path_box, src=0)
            if not d.main and path_box[0] is not None:
                chosen = run.read_checkpoint(Path(path_box[0]))
        if chosen is not None:
            _load_state(chosen, method, trainable, ema, optimizer, scaler, d)
            start = int(chosen["step"])
            best = chosen.get("best")
            elapsed0 = float(chosen.get("elapsed", 0.0))
            if d.main:
                run.truncate_metrics(start)
                console.print(f"resuming {run.path} from step {start}")
        elif d.main:
            run.truncate_metrics(-1)  # no checkpoint survived: the log restarts with the run
    state.step = start

    total = cfg.train.steps
    if start >= total:
        previous = _read_json(run.summary_path)
        result = _finish(cfg, run, method, student, ema, dataset, d, None, best, start, precision, device, notes,
                         elapsed0, 0.0, 0.0, previous.get("final_loss"), previous.get("val") or {}, console, show,
                         skip_export=run.model_path.is_file())
        result.already_complete = True
        return result

    log = MetricsLog(run, cfg.run.tensorboard) if d.main else None
    if log is not None and start == 0:
        from ..provenance import record

        log.write({"kind": "start", "step": 0, "config": cfg.to_dict(), "images": len(dataset.images),
                   "skipped": dataset.skipped, "unreadable": [f for f, _ in dataset.unreadable], "device": str(device),
                   "precision": precision, "world": d.world, "threads": torch.get_num_threads(), **record(device)})

    net = method
    if d.active:
        from torch.nn.parallel import DistributedDataParallel as DDP

        import inspect

        # no buffer broadcast each forward: the models have no running statistics, and a frozen
        # teacher's buffers are identical on every rank already
        sync = ({"forward_sync_buffers": False} if "forward_sync_buffers" in inspect.signature(DDP).parameters
                else {"broadcast_buffers": False})
        net = DDP(method, device_ids=[device.index] if device.type == "cuda" else None,
                  find_unused_parameters=len(trainable) > 1, **sync)

    if show:
        n_params = sum(p.numel() for p in params)
        console.print(f"training {cfg.model.arch} x{cfg.model.scale} ({n_params:,} trainable parameters) on "
                      f"{len(dataset.images)} images: batch {cfg.data.batch}"
                      f"{f' x {d.world} processes' if d.active else ''}, LR patch {cfg.data.patch}, {precision} on {device}"
                      f"{f' ({torch.get_num_threads()} threads)' if device.type == 'cpu' else ''}, steps {start + 1}-{total} -> {run.path}")
    batches = Batches(dataset, seed, d.rank, cfg.data.batch, cfg.data.augment, start + 1, cfg.data.workers)
    display = _Display(console, total, start, show)
    autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    autocast = torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype else contextlib.nullcontext()
    val_last: dict = {}
    last_loss = None
    data_time = step_time = 0.0
    t_window, n_window = time.perf_counter(), 0
    step = start
    stop_signal = None
    cpu_stop = torch.zeros(1)

    try:
        with _Stop() as stopper, image_convs_fp32(student, autocast_dtype is not None):
            for step in range(start + 1, total + 1):
                t0 = time.perf_counter()
                lr_np, hr_np = batches.get(step)
                lr_t, hr_t = _batch_tensors(lr_np, hr_np, device, channels_last)
                t1 = time.perf_counter()
                lr_now = lr_at(cfg, step)
                for g in optimizer.param_groups:
                    g["lr"] = lr_now
                state.step = step - 1
                if hasattr(method, "on_step_start"):
                    method.on_step_start(step - 1)
                optimizer.zero_grad(set_to_none=True)
                # A method may ask for several optimiser steps per batch (DUKD's official two:
                # forward(..., phase=k) gives step k's terms; carry_grad keeps step k's gradient
                # in step k+1, as the official code never zeroes it in between).
                phases = int(getattr(method, "steps_per_batch", 1))
                terms, loss = {}, 0.0
                for phase in range(phases):
                    with autocast:
                        part = net(lr_t, hr_t) if phases == 1 else net(lr_t, hr_t, phase=phase)
                    if not part:
                        raise TypeError("the method returned no loss terms")
                    part_loss = sum(v.float() for v in part.values())
                    scaler.scale(part_loss).backward()
                    if cfg.optim.clip_grad > 0:
                        scaler.unscale_(optimizer)
                        torch.nn.utils.clip_grad_norm_(params, cfg.optim.clip_grad)
                    scaler.step(optimizer)
                    scaler.update()
                    if phase + 1 < phases and not getattr(method, "carry_grad", False):
                        optimizer.zero_grad(set_to_none=True)
                    terms.update(part)
                    loss = loss + part_loss
                if ema is not None:
                    ema.update(student)
                state.step = step
                if hasattr(method, "on_step_end"):
                    method.on_step_end(step - 1)

                # one reduction carries the logged values and the stop flag to every rank
                names = list(terms)
                vals = torch.stack([loss.detach().float()] + [terms[k].detach().float() for k in names])
                stop_now = float(stopper.signum is not None)
                if d.active:
                    import torch.distributed as dist

                    packed = torch.cat([vals, torch.tensor([stop_now], device=vals.device)])
                    dist.all_reduce(packed)
                    vals, stop_now = packed[:-1] / d.world, float(packed[-1].item())
                values = vals.tolist()
                t2 = time.perf_counter()
                data_time += t1 - t0
                step_time += t2 - t0
                n_window += 1
                last_loss = values[0]
                if not math.isfinite(last_loss):
                    raise SrkdError(f"the loss became {last_loss} at step {step}; lower --lr, add gradient clipping "
                                    f"(optim.clip_grad) or use --precision fp32")
                if log is not None and (step % cfg.train.log_every == 0 or step == total):
                    rec = {"step": step, "loss": values[0], **{k: v for k, v in zip(names, values[1:])}, "lr": lr_now}
                    if hasattr(method, "log_values"):
                        rec.update({k: float(v) for k, v in method.log_values().items()})
                    log.write(rec)
                now = time.perf_counter()
                if now - t_window > 2.0 or step == total:
                    display.update(step, ips=f"{n_window / (now - t_window):.2f}", loss=f"{last_loss:.4f}", lr=f"{lr_now:.2e}")
                    t_window, n_window = now, 0

                final = step == total
                validate = (bool(cfg.val.sets) and (step % cfg.val.every == 0 or final)) or (final and bool(cfg.val.final_sets))
                improved = False
                if validate and d.main:
                    val_last = _validate(cfg, _eval_view(method, ema.module if ema else student), device, final)
                    first = next(iter(val_last))
                    score = val_last[first]["psnr"]
                    rec = {"kind": "val", "step": step, **{f"{k}_psnr": v["psnr"] for k, v in val_last.items()},
                           **{f"{k}_ssim": v["ssim"] for k, v in val_last.items()}}
                    log.write(rec)
                    if best is None or score > best["psnr"]:
                        best = {"step": step, "dataset": first, "psnr": score, "ssim": val_last[first]["ssim"]}
                        improved = True
                    display.update(step, val=f"{first} {score:.2f} dB")
                    display.print(f"step {step}: " + ", ".join(f"{k} {v['psnr']:.2f} dB / {v['ssim']:.4f}" for k, v in val_last.items())
                                  + ("  (best)" if improved else ""))
                if validate and d.active:
                    import torch.distributed as dist

                    box = [improved]
                    dist.broadcast_object_list(box, src=0)  # every rank must join the checkpoint's RNG gather
                    improved = box[0]
                stopping = stop_now > 0
                if step % cfg.run.ckpt_every == 0 or step == total or improved or stopping:
                    elapsed = elapsed0 + (time.perf_counter() - wall0)
                    _save_checkpoint(run, cfg, fingerprint, step, method, trainable, ema, optimizer, scaler, best,
                                     elapsed, d, improved)
                if stopping:
                    stop_signal = stopper.signum or signal.SIGTERM
                    break
    except BaseException:
        if log is not None:
            log.close()
        raise
    finally:
        batches.close()
        display.close()

    elapsed = elapsed0 + (time.perf_counter() - wall0)
    n_steps = step - start
    result = _finish(cfg, run, method, student, ema, dataset, d, log, best, step, precision, device, notes, elapsed,
                     step_time, data_time, last_loss, val_last, console, show,
                     skip_export=stop_signal is not None, steps_run=n_steps)
    result.interrupted = stop_signal
    return result


def _read_json(path: Path) -> dict:
    import json

    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}


def _eval_view(method, model: nn.Module) -> nn.Module:
    """The network validation scores: the method's view of the trained model (CSD: its student slice)."""
    view = getattr(method, "eval_model", None)
    return view(model) if view is not None else model


def _validate(cfg: C.TrainConfig, model: nn.Module, device: torch.device, final: bool = False) -> dict:
    """Scores on ``val.sets`` (the first one picks the best checkpoint), plus ``val.final_sets`` at the end."""
    from ..evaluate import evaluate

    sets = list(cfg.val.sets)
    if final:
        sets += [s for s in cfg.val.final_sets if s not in sets]
    was_training = model.training
    try:
        results = evaluate(model, datasets=sets, scale=model.scale, data_root=cfg.val.data_root,
                           device=str(device), precision=cfg.val.precision, progress=False)
    finally:
        model.train(was_training)
    return {r.dataset.lower(): {"psnr": r.psnr, "ssim": r.ssim, "images": r.n_images} for r in results}


def _save_checkpoint(run: RunDir, cfg, fingerprint, step, method, trainable, ema, optimizer, scaler, best, elapsed,
                     d: Dist, improved: bool) -> None:
    rngs = [rng_state()]
    if d.active:
        import torch.distributed as dist

        gathered = [None] * d.world
        dist.all_gather_object(gathered, rngs[0])
        rngs = gathered
    if not d.main:
        return
    state = {
        "format": STATE_FORMAT,
        "version": STATE_VERSION,
        "fingerprint": fingerprint,
        "step": step,
        "trainable": {name: m.state_dict() for name, m in trainable.items()},
        "ema": ema.state_dict() if ema is not None else None,
        "extra": method.extra_state() if hasattr(method, "extra_state") else {},
        "optimizer": optimizer.state_dict(),
        "scheduler": {"kind": cfg.schedule.kind, "step": step},  # the lr is a function of the step
        "scaler": scaler.state_dict() if scaler.is_enabled() else {},
        "rng": rngs,
        "data": {"next_step": step + 1},  # sampling is a pure function of (seed, step, rank)
        "best": best,
        "elapsed": elapsed,
    }
    run.save_checkpoint(step, state, cfg.run.keep, best["step"] if best else None)
    if improved and best is not None:
        run.write_best(best)


def _load_state(state: dict, method, trainable, ema, optimizer, scaler, d: Dist) -> None:
    for name, m in trainable.items():
        if name not in state["trainable"]:
            raise SrkdError(f"checkpoint has no '{name}' state; pass --overwrite to start over")
        m.load_state_dict(state["trainable"][name])
    if ema is not None and state.get("ema"):
        ema.load_state_dict(state["ema"])
    if hasattr(method, "load_extra_state"):
        method.load_extra_state(state.get("extra") or {})
    optimizer.load_state_dict(state["optimizer"])
    if scaler.is_enabled() and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    rngs = state.get("rng") or []
    if rngs:
        set_rng_state(rngs[d.rank] if d.rank < len(rngs) else rngs[0])


def _finish(cfg, run: RunDir, method, student, ema, dataset, d: Dist, log, best, step, precision, device, notes,
            elapsed, step_time, data_time, last_loss, val_last, console, show, skip_export=False, steps_run=0) -> TrainResult:
    final = ema.module if ema is not None else student
    # every rank must hold the same weights; a mismatch would mean a broken all-reduce
    hashes = [_state_hash(final)]
    if d.active:
        import torch.distributed as dist

        hashes = [None] * d.world
        dist.all_gather_object(hashes, _state_hash(final))
    model_path = run.model_path if run.model_path.is_file() else None
    if d.main and not skip_export:
        from ..io.checkpoint import save_model
        from ..provenance import record

        provenance = {
            "method": (method.describe() if hasattr(method, "describe") else {"method": cfg.method.name}),
            "teacher": cfg.method.teacher,
            "init": cfg.method.init,
            "arch": cfg.model.arch,
            "scale": cfg.model.scale,
            "data": [str(s) for s in cfg.data.sources],
            "train_images": len(dataset.images),
            "steps": step,
            "batch": cfg.data.batch * d.world,
            "patch": cfg.data.patch,
            "precision": precision,
            "ema": cfg.train.ema,
            "seed": cfg.train.seed,
            "val": val_last,
            "best": best,
            "trained_seconds": round(elapsed, 1),
            "run": str(run.path),
            "config_fingerprint": C.fingerprint(cfg),
            **record(device),
        }
        exported = final
        if hasattr(method, "export_model"):
            # e.g. CSD: the trained network is shared by two widths; the export is the student slice
            exported = method.export_model(final, run.path, provenance)
        model_path = save_model(exported, run.model_path, provenance=provenance, overwrite=True)
    sps = steps_run / step_time if step_time > 0 else 0.0
    result = TrainResult(
        run_dir=run.path, model_path=model_path, step=step, steps=cfg.train.steps, seconds=elapsed,
        train_seconds=step_time, steps_per_second=sps, data_fraction=(data_time / step_time if step_time else 0.0),
        final_loss=last_loss, val=val_last, best=best, precision=precision, device=str(device), world=d.world, notes=notes,
    )
    if log is not None:
        log.write({"kind": "end", "step": step, "seconds": round(elapsed, 2), "steps_per_second": round(sps, 4),
                   "data_fraction": round(result.data_fraction, 4), "rank_hashes": hashes,
                   "interrupted": step < cfg.train.steps})
        log.close()
    if d.main and len(set(hashes)) > 1:
        raise RuntimeError(f"ranks ended with different weights: {hashes}")
    if d.main and steps_run > 0:
        import json

        from ..io.files import atomic_path
        from ..provenance import machine

        summary = {"step": step, "steps": cfg.train.steps, "seconds": round(elapsed, 1), "steps_per_second": round(sps, 4),
                   "data_fraction": round(result.data_fraction, 4), "final_loss": last_loss, "val": val_last, "best": best,
                   "model": str(model_path) if model_path else None, "precision": precision, "device": str(device),
                   "world": d.world, "rank_hashes": hashes, "machine": machine(device)}
        with atomic_path(run.summary_path, overwrite=True) as tmp:
            tmp.write_text(json.dumps(summary, indent=2))
    return result
