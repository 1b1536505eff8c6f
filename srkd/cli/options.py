"""The training engine's options, declared once for ``srkd teacher-train`` and ``srkd distill``.

:func:`engine_options` adds them to a command's signature; the command receives them as one dict
``engine`` (option name -> value, None when not given), which ``srkd.train.config.from_options``
turns into a config after the defaults, a run's stored config (``--resume``), ``--config`` and
``--set``. Each option's help shows the engine default.
"""

from __future__ import annotations

import inspect
import typing
from pathlib import Path
from typing import Callable

import typer

from ..train.config import TrainConfig

_D = TrainConfig()


def _dflt(value) -> str:
    if isinstance(value, list):
        return ",".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in value) or "none"
    return f"{value:g}" if isinstance(value, float) else str(value)


# name -> (type, option factory), one per srkd.train.config.OPTION_KEYS entry (which maps it to its
# config key). Options left unset fall back to --config, then to the defaults; ``help`` can be
# replaced per command (distill's data and precision say more).
ENGINE: dict[str, tuple[object, Callable[..., typer.models.OptionInfo]]] = {
    "data": (list[Path], lambda help=None: typer.Option(
        None, "--data", metavar="PATH", help=help or "Training data (repeatable): folder of HR images, DIV2K root, or a pair-list file.")),
    "val": (list[str], lambda help=None: typer.Option(
        None, "--val", metavar="SETS", help=help or f"Validation benchmarks, comma-separated or repeated (set5, set14, b100, urban100); "
                                    f"'none' to skip. [default: {_dflt(_D.val.sets)}]")),
    "steps": (int, lambda help=None: typer.Option(None, help=help or f"Optimiser steps. [default: {_D.train.steps}]")),
    "out": (Path, lambda help=None: typer.Option(
        None, "--out", "-o", help=help or "Run folder (config, metrics, checkpoints, model.safetensors).")),
    "batch": (int, lambda help=None: typer.Option(None, help=help or f"Batch size per process. [default: {_D.data.batch}]")),
    "patch": (int, lambda help=None: typer.Option(
        None, help=help or f"LR patch size in pixels (HR patch = patch x scale). [default: {_D.data.patch}]")),
    "lr": (float, lambda help=None: typer.Option(None, help=help or f"Adam learning rate. [default: {_dflt(_D.optim.lr)}]")),
    "schedule": (str, lambda help=None: typer.Option(
        None, help=help or f"multistep (halve at 2/3 of the run), cosine or constant. [default: {_D.schedule.kind}]")),
    "warmup": (int, lambda help=None: typer.Option(None, help=help or f"Linear warm-up steps. [default: {_D.schedule.warmup}]")),
    "clip_grad": (float, lambda help=None: typer.Option(
        None, help=help or f"Gradient norm clipping (0: off). [default: {_dflt(_D.optim.clip_grad)}]")),
    "precision": (str, lambda help=None: typer.Option(
        None, help=help or f"auto (bf16 where the hardware has it), fp32, bf16 or fp16 (CUDA). [default: {_D.train.precision}]")),
    "device": (str, lambda help=None: typer.Option(None, help=help or f"auto, cpu, cuda or cuda:N. [default: {_D.train.device}]")),
    "ema": (float, lambda help=None: typer.Option(
        None, help=help or f"EMA decay of weights and buffers (0: off); the EMA model is validated and exported. "
                           f"[default: {_D.train.ema}]")),
    "val_every": (int, lambda help=None: typer.Option(
        None, help=help or f"Steps between validations (and at the end). [default: {_D.val.every}]")),
    "ckpt_every": (int, lambda help=None: typer.Option(
        None, help=help or f"Steps between checkpoints (and at the end). [default: {_D.run.ckpt_every}]")),
    "keep": (int, lambda help=None: typer.Option(None, help=help or f"Checkpoints kept (plus the best). [default: {_D.run.keep}]")),
    "seed": (int, lambda help=None: typer.Option(
        None, help=help or f"Random seed (initialisation and batches). [default: {_D.train.seed}]")),
    "workers": (int, lambda help=None: typer.Option(
        None, help=help or f"Data threads assembling batches ahead (0: in the training loop). [default: {_D.data.workers}]")),
    "threads": (int, lambda help=None: typer.Option(
        None, help=help or f"Torch CPU threads (0: cores minus workers). [default: {_D.train.threads}]")),
    "augment": (bool, lambda help=None: typer.Option(
        None, "--augment/--no-augment", help=help or "Random flips and 90-degree rotations. [default: augment]")),
}


def engine_options(**helps: str):
    """Decorator: add every :data:`ENGINE` option to a Typer command, after its own parameters.

    The command takes a keyword ``engine``; ``helps`` replaces an option's help for this command.
    """

    def decorate(fn):
        sig = inspect.signature(fn)
        own = [p for p in sig.parameters.values() if p.name != "engine"]
        extra = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=make(helps.get(name)), annotation=tp)
                 for name, (tp, make) in ENGINE.items()]

        def command(**kwargs):
            engine = {name: kwargs.pop(name) for name in ENGINE}
            return fn(engine=engine, **kwargs)

        command.__name__, command.__qualname__, command.__doc__ = fn.__name__, fn.__qualname__, fn.__doc__
        command.__module__ = fn.__module__
        hints = {k: v for k, v in typing.get_type_hints(fn).items() if k != "engine"}
        command.__annotations__ = {**hints, **{name: tp for name, (tp, _) in ENGINE.items()}}
        command.__signature__ = sig.replace(parameters=own + extra)
        return command

    return decorate

