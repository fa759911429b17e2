"""In-process split learning: one step's roles and evaluation (the reference run now lives
in :mod:`fedadc.federated.reference`; ``train_reference`` stays importable from here)."""

from typing import Any

from fedadc.train.evaluate import EvalResult, evaluate
from fedadc.train.roles import SplitClient, SplitServer, StepMetrics

__all__ = [
    "EvalResult",
    "SplitClient",
    "SplitServer",
    "StepMetrics",
    "evaluate",
    "train_reference",
]


def __getattr__(name: str) -> Any:
    # lazy: fedadc.federated imports this package (evaluate, roles) while it loads
    if name == "train_reference":
        from fedadc.federated.reference import train_reference

        return train_reference
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
