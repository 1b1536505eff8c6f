"""The training loop shared by ``srkd teacher-train`` and every distillation method.

One loop, iteration-based::

    batch = sample(seed, step, rank)                  # deterministic: the data position is the step
    terms = method(lr, hr)                            # dict of named, already weighted loss tensors
    loss = sum(terms)  -> backward -> (unscale, clip) -> Adam step -> EMA update
    every val.every steps: validate the EMA model with the exact `srkd eval` protocol
    every run.ckpt_every steps: atomic checkpoint (model, EMA, optimiser, scaler, RNGs, step)

The method's side of the contract is :class:`~srkd.train.method.Method`. The parts around the
loop have their own modules: :mod:`~srkd.train.ema`, :mod:`~srkd.train.schedule`,
:mod:`~srkd.train.dist` (torchrun, devices, threads), :mod:`~srkd.train.display`,
:mod:`~srkd.train.runs` (run folders and checkpoints) and :mod:`~srkd.train.export` (the end of
a run). Under ``torchrun`` the method is wrapped in DistributedDataParallel (NCCL on CUDA, Gloo
on CPU).
"""

from __future__ import annotations

import contextlib
import math
import signal
import time
from typing import Callable

import torch
from torch import nn

from ..errors import SrkdError
from ..precision import image_convs_fp32
from . import config as C
from .dist import cpu_threads, rank_device, setup_distributed
from .display import Display, StopSignals
from .ema import EMA
from .export import finish
from .method import Method, Supervised
from .runs import MetricsLog, save_state
from .schedule import lr_at
from .setup import already_complete, build_student, check_config, resume_from_checkpoint, setup
from .state import EngineState, Outcome, RunContext, TrainResult

__all__ = ["train", "check_config", "build_student", "Supervised", "EMA", "lr_at", "EngineState", "TrainResult"]

def train(
    cfg: C.TrainConfig,
    method_factory: Callable[[nn.Module], Method] | None = None,
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

    from ..infer.device import torch_threads
    from ..io.files import FolderLock

    cfg = check_config(cfg)
    console = console or Console()
    wall0 = time.perf_counter()
    d = setup_distributed(cfg.train.device)
    try:
        device = rank_device(cfg.train.device, d)
        # one process per run folder: a second srkd on the same --out is refused (rank 0 holds it)
        with FolderLock(cfg.run.out) if d.main else contextlib.nullcontext(), \
                torch_threads(cpu_threads(cfg, d) if device.type == "cpu" else None):
            ctx, plan = setup(cfg, method_factory, overwrite, resume, progress, console, d, device, wall0)
            if not plan.fresh:
                resume_from_checkpoint(ctx)
            if ctx.start >= cfg.train.steps:
                return already_complete(ctx)
            out = _loop(ctx)
            result = finish(ctx, out, ctx.elapsed0 + (time.perf_counter() - wall0))
            return result
    finally:
        if d.owns_group:
            import torch.distributed as dist

            with contextlib.suppress(Exception):
                dist.destroy_process_group()


# -------------------------------------------------------------------------------------- the loop


def _start_log(ctx: RunContext) -> None:
    if not ctx.d.main:
        return
    ctx.log = MetricsLog(ctx.run, ctx.cfg.run.tensorboard)
    if ctx.start == 0:
        from ..provenance import record

        ds = ctx.dataset
        ctx.log.write({"kind": "start", "step": 0, "config": ctx.cfg.to_dict(), "images": len(ds.images),
                       "skipped": ds.skipped, "unreadable": [f for f, _ in ds.unreadable], "device": str(ctx.device),
                       "precision": ctx.precision, "world": ctx.d.world, "threads": torch.get_num_threads(),
                       **record(ctx.device)})


def _wrap(ctx: RunContext) -> nn.Module:
    if not ctx.d.active:
        return ctx.method
    import inspect

    from torch.nn.parallel import DistributedDataParallel as DDP

    # no buffer broadcast each forward: the models have no running statistics, and a frozen
    # teacher's buffers are identical on every rank already
    sync = ({"forward_sync_buffers": False} if "forward_sync_buffers" in inspect.signature(DDP).parameters
            else {"broadcast_buffers": False})
    return DDP(ctx.method, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None,
               find_unused_parameters=len(ctx.trainable) > 1, **sync)


def _announce(ctx: RunContext) -> None:
    if not ctx.show:
        return
    cfg, d, device = ctx.cfg, ctx.d, ctx.device
    n_params = sum(p.numel() for p in ctx.params)
    ctx.console.print(
        f"training {cfg.model.arch} x{cfg.model.scale} ({n_params:,} trainable parameters) on "
        f"{len(ctx.dataset.images)} images: batch {cfg.data.batch}"
        f"{f' x {d.world} processes' if d.active else ''}, LR patch {cfg.data.patch}, {ctx.precision} on {device}"
        f"{f' ({torch.get_num_threads()} threads)' if device.type == 'cpu' else ''}, "
        f"steps {ctx.start + 1}-{cfg.train.steps} -> {ctx.run.path}")


def _batch_tensors(lr_np, hr_np, device: torch.device, channels_last: bool):
    # NHWC uint8 -> permuted view is already channels_last in memory; converting on the device
    # moves a quarter of the bytes of a float batch.
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    lr = torch.from_numpy(lr_np).to(device, non_blocking=True).permute(0, 3, 1, 2)
    hr = torch.from_numpy(hr_np).to(device, non_blocking=True).permute(0, 3, 1, 2)
    lr = lr.to(torch.float32, memory_format=fmt).div_(255.0)
    hr = hr.to(torch.float32, memory_format=fmt).div_(255.0)
    return lr, hr


def _optimise(ctx: RunContext, net: nn.Module, lr_t, hr_t, autocast) -> tuple[dict, torch.Tensor]:
    """One batch: the method's optimiser step(s); the loss terms and their sum."""
    method, optimizer, scaler, cfg = ctx.method, ctx.optimizer, ctx.scaler, ctx.cfg
    optimizer.zero_grad(set_to_none=True)
    # A method may ask for several optimiser steps per batch (DUKD's official two).
    phases = int(method.steps_per_batch)
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
            torch.nn.utils.clip_grad_norm_(ctx.params, cfg.optim.clip_grad)
        scaler.step(optimizer)
        scaler.update()
        if phase + 1 < phases and not method.carry_grad:
            optimizer.zero_grad(set_to_none=True)
        terms.update(part)
        loss = loss + part_loss
    return terms, loss


def _reduce(ctx: RunContext, terms: dict, loss, stopper: StopSignals) -> tuple[list[str], list[float], bool]:
    """One reduction carries the logged values and the stop flag to every rank."""
    names = list(terms)
    vals = torch.stack([loss.detach().float()] + [terms[k].detach().float() for k in names])
    stop_now = float(stopper.signum is not None)
    if ctx.d.active:
        import torch.distributed as dist

        packed = torch.cat([vals, torch.tensor([stop_now], device=vals.device)])
        dist.all_reduce(packed)
        vals, stop_now = packed[:-1] / ctx.d.world, float(packed[-1].item())
    return names, vals.tolist(), stop_now > 0


def _maybe_validate(ctx: RunContext, step: int, display: Display, val_last: dict) -> tuple[dict, bool]:
    """Validate when due (rank 0); (the latest scores, whether they are the best so far)."""
    cfg = ctx.cfg
    final = step == cfg.train.steps
    due = (bool(cfg.val.sets) and (step % cfg.val.every == 0 or final)) or (final and bool(cfg.val.final_sets))
    improved = False
    if due and ctx.d.main:
        val_last = _validate(cfg, ctx.method.eval_model(ctx.final_model), ctx.device, final)
        first = next(iter(val_last))
        score = val_last[first]["psnr"]
        ctx.log.write({"kind": "val", "step": step, **{f"{k}_psnr": v["psnr"] for k, v in val_last.items()},
                       **{f"{k}_ssim": v["ssim"] for k, v in val_last.items()}})
        if ctx.best is None or score > ctx.best["psnr"]:
            ctx.best = {"step": step, "dataset": first, "psnr": score, "ssim": val_last[first]["ssim"]}
            improved = True
        display.update(step, val=f"{first} {score:.2f} dB")
        display.print(f"step {step}: " + ", ".join(f"{k} {v['psnr']:.2f} dB / {v['ssim']:.4f}" for k, v in val_last.items())
                      + ("  (best)" if improved else ""))
    if due and ctx.d.active:
        import torch.distributed as dist

        box = [improved]
        dist.broadcast_object_list(box, src=0)  # every rank must join the checkpoint's RNG gather
        improved = box[0]
    return val_last, improved


def _loop(ctx: RunContext) -> Outcome:
    from ..data.patches import Batches

    cfg, total = ctx.cfg, ctx.cfg.train.steps
    _start_log(ctx)
    net = _wrap(ctx)
    _announce(ctx)
    batches = Batches(ctx.dataset, cfg.train.seed, ctx.d.rank, cfg.data.batch, cfg.data.augment, ctx.start + 1,
                      cfg.data.workers)
    display = Display(ctx.console, total, ctx.start, ctx.show)
    low = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(ctx.precision)
    autocast = torch.autocast(ctx.device.type, dtype=low) if low else contextlib.nullcontext()
    channels_last = cfg.train.channels_last and ctx.device.type in ("cpu", "cuda")
    out = Outcome(step=ctx.start)
    t_window, n_window = time.perf_counter(), 0
    try:
        with StopSignals() as stopper, image_convs_fp32(ctx.student, low is not None):
            for step in range(ctx.start + 1, total + 1):
                out.step = step
                t0 = time.perf_counter()
                lr_t, hr_t = _batch_tensors(*batches.get(step), ctx.device, channels_last)
                t1 = time.perf_counter()
                lr_now = lr_at(cfg, step)
                for g in ctx.optimizer.param_groups:
                    g["lr"] = lr_now
                ctx.state.step = step - 1
                ctx.method.on_step_start(step - 1)
                terms, loss = _optimise(ctx, net, lr_t, hr_t, autocast)
                if ctx.ema is not None:
                    ctx.ema.update(ctx.student)
                ctx.state.step = step
                ctx.method.on_step_end(step - 1)
                names, values, stopping = _reduce(ctx, terms, loss, stopper)
                t2 = time.perf_counter()
                out.data_time += t1 - t0
                out.step_time += t2 - t0
                n_window += 1
                out.last_loss = values[0]
                if not math.isfinite(out.last_loss):
                    raise SrkdError(f"the loss became {out.last_loss} at step {step}; lower --lr, add gradient clipping "
                                    f"(optim.clip_grad) or use --precision fp32")
                if ctx.log is not None and (step % cfg.train.log_every == 0 or step == total):
                    rec = {"step": step, "loss": values[0], **dict(zip(names, values[1:])), "lr": lr_now}
                    rec.update({k: float(v) for k, v in ctx.method.log_values().items()})
                    ctx.log.write(rec)
                now = time.perf_counter()
                if now - t_window > 2.0 or step == total:
                    display.update(step, ips=f"{n_window / (now - t_window):.2f}", loss=f"{out.last_loss:.4f}", lr=f"{lr_now:.2e}")
                    t_window, n_window = now, 0
                out.val, improved = _maybe_validate(ctx, step, display, out.val)
                if step % cfg.run.ckpt_every == 0 or step == total or improved or stopping:
                    save_state(ctx, step, improved)
                if stopping:
                    out.interrupted = stopper.signum or signal.SIGTERM
                    break
    except BaseException:
        if ctx.log is not None:
            ctx.log.close()
        raise
    finally:
        batches.close()
        display.close()
    out.steps_run = out.step - ctx.start
    out.skip_export = out.interrupted is not None
    return out


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
