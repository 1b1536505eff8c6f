"""What a running training job holds: the state a method may read, the run's context, its result."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from . import config as C

if TYPE_CHECKING:
    from .dist import Dist
    from .ema import EMA
    from .method import Method
    from .runs import MetricsLog, RunDir


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


@dataclass
class RunContext:
    """One training job as the engine sets it up; checkpoints and the export read it."""

    cfg: C.TrainConfig
    run: RunDir
    d: Dist
    device: torch.device
    precision: str
    method: Method
    student: nn.Module
    trainable: dict[str, nn.Module]
    params: list[nn.Parameter]
    optimizer: torch.optim.Optimizer
    scaler: Any  # torch.amp.GradScaler
    ema: EMA | None
    dataset: Any  # srkd.data.patches.TrainingSet
    state: EngineState
    fingerprint: str
    console: Any
    show: bool
    wall0: float
    notes: list[str] = field(default_factory=list)
    log: MetricsLog | None = None
    best: dict | None = None
    start: int = 0
    elapsed0: float = 0.0

    @property
    def final_model(self) -> nn.Module:
        """The network the run validates and exports: the EMA model, else the student."""
        return self.ema.module if self.ema is not None else self.student


@dataclass
class Outcome:
    """How the loop ended: what the export and the summary record."""

    step: int
    step_time: float = 0.0
    data_time: float = 0.0
    last_loss: float | None = None
    val: dict = field(default_factory=dict)
    steps_run: int = 0
    skip_export: bool = False
    interrupted: int | None = None
