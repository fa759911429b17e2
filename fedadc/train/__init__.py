"""In-process split learning: one step's roles, evaluation, and the reference run."""

from fedadc.evaluation import EvalResult, evaluate
from fedadc.step import SplitClient, SplitServer, StepMetrics
from fedadc.train.reference import train_reference

__all__ = [
    "EvalResult",
    "SplitClient",
    "SplitServer",
    "StepMetrics",
    "evaluate",
    "train_reference",
]
