"""In-process split-learning reference trainer (no Flower)."""

from fedadc.train.config import ModelConfig, TrainConfig
from fedadc.train.evaluate import EvalResult, evaluate
from fedadc.train.reference import TrainResult, train_reference
from fedadc.train.roles import SplitClient, SplitServer, StepMetrics

__all__ = [
    "EvalResult",
    "ModelConfig",
    "SplitClient",
    "SplitServer",
    "StepMetrics",
    "TrainConfig",
    "TrainResult",
    "evaluate",
    "train_reference",
]
