"""In-process split learning: one step's roles, evaluation, and the reference run."""

from fedadc.train.evaluate import EvalResult, evaluate
from fedadc.train.reference import train_reference
from fedadc.train.roles import SplitClient, SplitServer, StepMetrics

__all__ = [
    "EvalResult",
    "SplitClient",
    "SplitServer",
    "StepMetrics",
    "evaluate",
    "train_reference",
]
