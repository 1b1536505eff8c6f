"""Run folders: resolved config, metrics log, atomic training checkpoints, exact resume.

Layout of a run folder::

    config.yaml               the resolved configuration (what the run computes)
    metrics.jsonl             one JSON record per logged step, validation and event
    checkpoints/step_00001000.pt (+ .sha256)   training state, last K plus the best
    checkpoints/best.json     which checkpoint scored best on validation
    model.safetensors         the exported (EMA) model with provenance
    tb/                       TensorBoard event files (when tensorboard is installed)

Checkpoints hold plain tensors, numbers and strings only (``torch.save`` of dicts, read back with
``weights_only=True``): no pickled code. Each file is written to a temporary name and renamed, and
its SHA-256 is written beside it, so that a truncated or damaged latest checkpoint is detected and
the previous one is used instead, with a warning.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import random
import re
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import SrkdError
from ..io.files import sha256_file
from ..io.files import LOCK_NAME, atomic_path, write_bytes
from . import config as C

CKPT_RE = re.compile(r"^step_(\d{8})\.pt$")
STATE_FORMAT = "srkd-train-state"
STATE_VERSION = 1
# Files and folders srkd writes in a run folder; --overwrite removes these and nothing else.
RUN_FILES = ("config.yaml", "metrics.jsonl", "model.safetensors", "summary.json")
RUN_DIRS = ("checkpoints", "tb")


class CheckpointWarning(UserWarning):
    pass


@dataclass
class RunPlan:
    """What to do with a run folder: start fresh, or resume from ``checkpoint`` (None: from step 0)."""

    dir: Path
    fresh: bool
    clear: bool = False  # --overwrite of an existing run: remove srkd's files first
    stored: C.TrainConfig | None = None


class RunDir:
    def __init__(self, path):
        self.path = Path(path)
        self.config_path = self.path / "config.yaml"
        self.metrics_path = self.path / "metrics.jsonl"
        self.ckpt_dir = self.path / "checkpoints"
        self.best_path = self.ckpt_dir / "best.json"
        self.model_path = self.path / "model.safetensors"
        self.summary_path = self.path / "summary.json"
        self.tb_dir = self.path / "tb"

    # -- configuration ---------------------------------------------------------------------
    def stored_config(self) -> C.TrainConfig | None:
        if not self.config_path.is_file():
            return None
        try:
            return C.from_dict(C.load_yaml(self.config_path))
        except SrkdError as exc:
            raise SrkdError(f"{self.config_path} is not a valid srkd run config ({exc}); pass --overwrite to start over") from None

    def plan(self, cfg: C.TrainConfig, overwrite: bool = False, resume: bool = False) -> RunPlan:
        """Decide between fresh start and resume; refuse a folder holding a different run."""
        stored = self.stored_config()
        if stored is None:
            if resume:
                raise SrkdError(f"nothing to resume: {self.path} holds no srkd run (no config.yaml)")
            if self.path.exists() and any(p.name != LOCK_NAME for p in self.path.iterdir()) and not overwrite:
                raise SrkdError(f"{self.path} exists and is not an srkd run folder; choose another --out or pass --overwrite")
            return RunPlan(self.path, fresh=True, clear=overwrite and self.path.exists())
        if overwrite:
            return RunPlan(self.path, fresh=True, clear=True)
        diffs = C.differences(stored, cfg)
        if diffs:
            more = f" (and {len(diffs) - 1} more)" if len(diffs) > 1 else ""
            raise SrkdError(f"{self.path} holds a run with a different configuration: {diffs[0]}{more}; "
                            f"rerun with the same options to resume, or pass --overwrite to start over")
        return RunPlan(self.path, fresh=False, stored=stored)

    def clear(self) -> None:
        for name in RUN_FILES:
            with contextlib.suppress(FileNotFoundError):
                (self.path / name).unlink()
        for name in RUN_DIRS:
            shutil.rmtree(self.path / name, ignore_errors=True)

    def write_config(self, cfg: C.TrainConfig) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.config_path, overwrite=True) as tmp:
            tmp.write_text(cfg.to_yaml())

    # -- checkpoints -----------------------------------------------------------------------
    def checkpoints(self) -> list[tuple[int, Path]]:
        if not self.ckpt_dir.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.ckpt_dir.iterdir() if (m := CKPT_RE.match(p.name))]
        return sorted(found)

    def save_checkpoint(self, step: int, state: dict, keep: int, best_step: int | None) -> Path:
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        path = self.ckpt_dir / f"step_{step:08d}.pt"
        buf = io.BytesIO()
        torch.save(state, buf)
        data = buf.getvalue()
        with atomic_path(path, overwrite=True) as tmp:
            write_bytes(tmp, data)  # a full disk is an OSError here, one line from atomic_path
        digest = hashlib.sha256(data).hexdigest()
        with atomic_path(path.with_name(path.name + ".sha256"), overwrite=True) as tmp:
            tmp.write_text(f"{digest}  {path.name}\n")
        self.prune(keep, best_step)
        return path

    def prune(self, keep: int, best_step: int | None) -> None:
        ckpts = self.checkpoints()
        keep_steps = {s for s, _ in ckpts[-keep:]}
        if best_step is not None:
            keep_steps.add(best_step)
        for s, p in ckpts:
            if s not in keep_steps:
                for f in (p, p.with_name(p.name + ".sha256")):
                    with contextlib.suppress(FileNotFoundError):
                        f.unlink()

    def read_checkpoint(self, path: Path) -> dict:
        """Load one checkpoint, verifying its checksum; raise ValueError when it is damaged."""
        side = path.with_name(path.name + ".sha256")
        if side.is_file():
            want = side.read_text().split()[0] if side.read_text().strip() else ""
            if sha256_file(path) != want:
                raise ValueError("SHA-256 does not match the value recorded when it was written")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # any unpickling/zip error means the file is unusable
            raise ValueError(f"cannot be loaded ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})") from None
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise ValueError("is not an srkd training checkpoint")
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"has state version {state.get('version')}, this srkd reads {STATE_VERSION}")
        return state

    def latest_state(self, fingerprint: str, on_warning=None) -> dict | None:
        """The newest readable checkpoint's state; damaged ones are skipped with a warning."""
        for step, path in reversed(self.checkpoints()):
            try:
                state = self.read_checkpoint(path)
            except ValueError as exc:
                msg = f"checkpoint {path} is damaged ({exc}); falling back to the previous one"
                warnings.warn(msg, CheckpointWarning, stacklevel=2)
                if on_warning is not None:
                    on_warning(msg)
                continue
            if state.get("fingerprint") != fingerprint:
                raise SrkdError(f"{path} was written by a run with a different configuration; pass --overwrite to start over")
            return state
        return None

    def read_best(self) -> dict | None:
        try:
            return json.loads(self.best_path.read_text())
        except (OSError, ValueError):
            return None

    def write_best(self, record: dict) -> None:
        with atomic_path(self.best_path, overwrite=True) as tmp:
            tmp.write_text(json.dumps(record, indent=2))

    # -- metrics ---------------------------------------------------------------------------
    def truncate_metrics(self, step: int) -> None:
        """Drop records logged after ``step`` (by an interrupted run), so the log reads as one run."""
        if not self.metrics_path.is_file():
            return
        kept = []
        for line in self.metrics_path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue  # a line cut by SIGKILL
            if rec.get("step", 0) <= step:
                kept.append(line)
        with atomic_path(self.metrics_path, overwrite=True) as tmp:
            tmp.write_text("".join(x + "\n" for x in kept))


class MetricsLog:
    """metrics.jsonl (flushed per record) and optional TensorBoard scalars."""

    def __init__(self, run: RunDir, tensorboard: bool = True):
        run.path.mkdir(parents=True, exist_ok=True)
        self.file = open(run.metrics_path, "a", buffering=1)
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except Exception:  # the optional extra is not installed
                SummaryWriter = None
            if SummaryWriter is not None:
                self.tb = SummaryWriter(str(run.tb_dir))

    def write(self, record: dict) -> None:
        record = {"time": round(time.time(), 3), **record}
        self.file.write(json.dumps(record, default=float) + "\n")
        if self.tb is not None and "step" in record:
            kind = record.get("kind", "train")
            for k, v in record.items():
                if k not in ("step", "time", "kind") and isinstance(v, (int, float)) and not isinstance(v, bool):
                    self.tb.add_scalar(f"{kind}/{k}", v, record["step"])

    def close(self) -> None:
        self.file.close()
        if self.tb is not None:
            self.tb.close()
            self.tb = None


def read_metrics(path) -> list[dict]:
    out = []
    p = Path(path)
    if not p.is_file():
        return out
    for line in p.read_text().splitlines():
        with contextlib.suppress(ValueError):
            out.append(json.loads(line))
    return out


# -- random number generator states ------------------------------------------------------------

def rng_state() -> dict:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": random.getstate(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if state.get("cuda") and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


# ------------------------------------------------------------------ a training job's checkpoints


def save_state(ctx, step: int, improved: bool) -> None:
    """Checkpoint ``ctx`` (a :class:`~srkd.train.state.RunContext`) after ``step``: every rank's
    RNGs are gathered, rank 0 writes."""
    d = ctx.d
    rngs = [rng_state()]
    if d.active:
        import torch.distributed as dist

        gathered = [None] * d.world
        dist.all_gather_object(gathered, rngs[0])
        rngs = gathered
    if not d.main:
        return
    cfg = ctx.cfg
    state = {
        "format": STATE_FORMAT,
        "version": STATE_VERSION,
        "fingerprint": ctx.fingerprint,
        "step": step,
        "trainable": {name: m.state_dict() for name, m in ctx.trainable.items()},
        "ema": ctx.ema.state_dict() if ctx.ema is not None else None,
        "extra": ctx.method.extra_state(),
        "optimizer": ctx.optimizer.state_dict(),
        "scheduler": {"kind": cfg.schedule.kind, "step": step},  # the lr is a function of the step
        "scaler": ctx.scaler.state_dict() if ctx.scaler.is_enabled() else {},
        "rng": rngs,
        "data": {"next_step": step + 1},  # sampling is a pure function of (seed, step, rank)
        "best": ctx.best,
        "elapsed": ctx.elapsed0 + (time.perf_counter() - ctx.wall0),
    }
    ctx.run.save_checkpoint(step, state, cfg.run.keep, ctx.best["step"] if ctx.best else None)
    if improved and ctx.best is not None:
        ctx.run.write_best(ctx.best)


def load_state(ctx, state: dict) -> None:
    """Restore a checkpoint into ``ctx``: trained modules, EMA, the method's extra state,
    optimiser, loss scaler and this rank's RNGs."""
    for name, m in ctx.trainable.items():
        if name not in state["trainable"]:
            raise SrkdError(f"checkpoint has no '{name}' state; pass --overwrite to start over")
        m.load_state_dict(state["trainable"][name])
    if ctx.ema is not None and state.get("ema"):
        ctx.ema.load_state_dict(state["ema"])
    ctx.method.load_extra_state(state.get("extra") or {})
    ctx.optimizer.load_state_dict(state["optimizer"])
    if ctx.scaler.is_enabled() and state.get("scaler"):
        ctx.scaler.load_state_dict(state["scaler"])
    rngs = state.get("rng") or []
    if rngs:
        set_rng_state(rngs[ctx.d.rank] if ctx.d.rank < len(rngs) else rngs[0])
