"""Mixed precision of head and tail: ``precision=bf16`` runs their forward passes under
``torch.autocast`` (CPU and CUDA); weights, optimizer state, the loss and everything that
crosses the wire stay float32, so the compressors and the ledger see no difference."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch

AUTOCAST_DTYPES: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16}
PRECISIONS = tuple(AUTOCAST_DTYPES)
"""Values of the run's ``precision`` key."""


def autocast(precision: str, device: torch.device) -> AbstractContextManager:
    """The context a forward pass runs in: nothing for fp32, ``torch.autocast`` else."""
    if precision not in AUTOCAST_DTYPES:
        raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
    dtype = AUTOCAST_DTYPES[precision]
    if dtype is None:
        return nullcontext()
    return torch.autocast(device.type, dtype=dtype)
