"""``srkd.train(...)``: supervised training of any architecture, what ``srkd teacher-train`` runs."""

from __future__ import annotations

from pathlib import Path

from ..errors import SrkdError


def warm_start(cfg, log=None):
    """A method factory for supervised training from ``cfg.method.init`` instead of random weights.

    The file is checked on a throw-away network first, so that a wrong file fails before the run
    folder is written. On resume the checkpoint then replaces these weights.
    """
    import torch

    from ..distill.init import init_student
    from .method import Supervised
    from .setup import build_student

    with torch.random.fork_rng(devices=[]):
        init_student(build_student(cfg.model), cfg.method.init, log=None)

    def factory(student):
        init_student(student, cfg.method.init, log=log)
        return Supervised(student, cfg.optim.loss)

    return factory


def train_network(arch: str | None = None, *, scale: int | None = None, loss: str | None = None,
                  init: str | None = None, config: str | Path | None = None, sets: list[str] | None = None,
                  resume: bool = False, overwrite: bool = False, progress: bool = True, console=None, log=None,
                  **engine):
    """Train ``arch`` (family, preset or spec) at ``scale`` on HR images, L1 to HR by default.

    ``engine``: any engine option by its command-line name (``data=["T91"], steps=20000,
    out="runs/edsr"``; see ``srkd.train.config.OPTION_KEYS``); ``config``: a YAML file of any of
    them; ``sets``: ``SECTION.KEY=VALUE`` strings. Re-running on the same ``out`` resumes exactly.
    Returns the :class:`~srkd.train.state.TrainResult`. A :class:`~srkd.train.config.TrainConfig`
    can also be trained directly with :func:`srkd.train.engine.train`.
    """
    from . import config as C
    from .engine import train

    options = {**C.engine_options(engine, resume, overwrite), "arch": arch, "scale": scale, "loss": loss}
    cfg = C.from_options(options, config, sets, resume)
    if not cfg.run.out:
        raise SrkdError("no run folder: give --out DIR (or run.out in --config)")
    if init is not None:
        local = Path(init).expanduser()
        cfg.method.init = str(local.resolve()) if local.exists() else init  # presets and hf:// stay references
    factory = warm_start(cfg, log) if cfg.method.init else None
    return train(cfg, factory, overwrite=overwrite, resume=resume, progress=progress, console=console)
