"""Training: typed configuration, the shared engine, run folders with exact resume.

``train(config, method_factory=None)`` trains a network (supervised by default, the
``teacher-train`` case) or any :class:`~srkd.train.method.Method` (the engine's contract);
``srkd distill`` passes a :class:`~srkd.distill.base.Distiller`.
"""

from .config import TrainConfig, from_dict, load_yaml
from .ema import EMA
from .engine import build_student, check_config, train
from .method import Method, Supervised
from .schedule import lr_at
from .state import EngineState, TrainResult
from .runs import RunDir, read_metrics

__all__ = [
    "EMA", "EngineState", "Method", "RunDir", "Supervised", "check_config", "TrainConfig", "TrainResult", "build_student", "from_dict",
    "load_yaml", "lr_at", "read_metrics", "train",
]


def train_network(*args, **kwargs):
    """``srkd.train(arch, ...)``: see :func:`srkd.train.api.train_network`."""
    from .api import train_network as run

    return run(*args, **kwargs)


from .._callable import make_callable  # noqa: E402

make_callable(__name__, train_network)
