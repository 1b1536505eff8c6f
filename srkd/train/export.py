"""The end of a training run: the exported model (with provenance), the summary and the last log line.

:func:`finish` takes the run's context and how its loop ended; it writes every file the run
produces at the end (a method returns the networks to write, it writes none itself).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from torch import nn

from . import config as C
from .state import Outcome, RunContext, TrainResult


def state_hash(module: nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in sorted(module.state_dict().items()):
        h.update(k.encode())
        t = v.detach().to("cpu")
        h.update((t.float() if t.dtype == torch.bfloat16 else t).numpy().tobytes())
    return h.hexdigest()[:16]


def provenance(ctx: RunContext, out: Outcome, elapsed: float) -> dict:
    from ..provenance import record

    cfg = ctx.cfg
    return {
        "method": ctx.method.describe() or {"method": cfg.method.name},
        "teacher": cfg.method.teacher,
        "init": cfg.method.init,
        "arch": cfg.model.arch,
        "scale": cfg.model.scale,
        "data": [str(s) for s in cfg.data.sources],
        "train_images": len(ctx.dataset.images),
        "steps": out.step,
        "batch": cfg.data.batch * ctx.d.world,
        "patch": cfg.data.patch,
        "precision": ctx.precision,
        "ema": cfg.train.ema,
        "seed": cfg.train.seed,
        "val": out.val,
        "best": ctx.best,
        "trained_seconds": round(elapsed, 1),
        "run": str(ctx.run.path),
        "config_fingerprint": C.fingerprint(cfg),
        **record(ctx.device),
    }


def _write_models(ctx: RunContext, out: Outcome, elapsed: float) -> Path:
    from ..io.checkpoint import save_model

    final = ctx.final_model
    prov = provenance(ctx, out, elapsed)
    # e.g. CSD: the trained network is shared by two widths; the export is the student slice and
    # the shared network is written beside it
    for name, (model, extra) in ctx.method.extra_exports(final).items():
        save_model(model, ctx.run.path / name, provenance={**prov, **extra}, overwrite=True)
    return save_model(ctx.method.export_model(final), ctx.run.model_path, provenance=prov, overwrite=True)


def _write_summary(ctx: RunContext, out: Outcome, result: TrainResult, hashes: list) -> None:
    from ..io.files import atomic_path
    from ..provenance import machine

    summary = {"step": out.step, "steps": ctx.cfg.train.steps, "seconds": round(result.seconds, 1),
               "steps_per_second": round(result.steps_per_second, 4), "data_fraction": round(result.data_fraction, 4),
               "final_loss": out.last_loss, "val": out.val, "best": ctx.best,
               "model": str(result.model_path) if result.model_path else None, "precision": ctx.precision,
               "device": str(ctx.device), "world": ctx.d.world, "rank_hashes": hashes, "machine": machine(ctx.device)}
    with atomic_path(ctx.run.summary_path, overwrite=True) as tmp:
        tmp.write_text(json.dumps(summary, indent=2))


def finish(ctx: RunContext, out: Outcome, elapsed: float) -> TrainResult:
    """Export (unless ``out.skip_export``), close the log, write the summary; the run's result."""
    d = ctx.d
    # every rank must hold the same weights; a mismatch would mean a broken all-reduce
    hashes = [state_hash(ctx.final_model)]
    if d.active:
        import torch.distributed as dist

        hashes = [None] * d.world
        dist.all_gather_object(hashes, state_hash(ctx.final_model))
    model_path = ctx.run.model_path if ctx.run.model_path.is_file() else None
    if d.main and not out.skip_export:
        model_path = _write_models(ctx, out, elapsed)
    sps = out.steps_run / out.step_time if out.step_time > 0 else 0.0
    result = TrainResult(
        run_dir=ctx.run.path, model_path=model_path, step=out.step, steps=ctx.cfg.train.steps, seconds=elapsed,
        train_seconds=out.step_time, steps_per_second=sps,
        data_fraction=(out.data_time / out.step_time if out.step_time else 0.0), final_loss=out.last_loss,
        val=out.val, best=ctx.best, precision=ctx.precision, device=str(ctx.device), world=d.world, notes=ctx.notes,
        interrupted=out.interrupted,
    )
    if ctx.log is not None:
        ctx.log.write({"kind": "end", "step": out.step, "seconds": round(elapsed, 2), "steps_per_second": round(sps, 4),
                       "data_fraction": round(result.data_fraction, 4), "rank_hashes": hashes,
                       "interrupted": out.step < ctx.cfg.train.steps})
        ctx.log.close()
    if d.main and len(set(hashes)) > 1:
        raise RuntimeError(f"ranks ended with different weights: {hashes}")
    if d.main and out.steps_run > 0:
        _write_summary(ctx, out, result, hashes)
    return result
