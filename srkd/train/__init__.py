"""Training: typed configuration, the shared engine, run folders with exact resume.

``train(config, method_factory=None)`` trains a network (supervised by default, the
``teacher-train`` case) or any method object following the engine's protocol (see
:mod:`srkd.train.engine`); ``srkd distill`` passes a :class:`~srkd.distill.base.Distiller`.
"""

from .config import TrainConfig, from_dict, load_yaml
from .engine import EMA, EngineState, Supervised, TrainResult, build_student, lr_at, train
from .runs import RunDir, read_metrics

__all__ = [
    "EMA", "EngineState", "RunDir", "Supervised", "TrainConfig", "TrainResult", "build_student", "from_dict",
    "load_yaml", "lr_at", "read_metrics", "train",
]
