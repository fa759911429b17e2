"""Pin torch's intra-op thread count for a run (CPU results depend on it)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from fedadc.config.schema import RunConfig


@contextlib.contextmanager
def run_threads(run: RunConfig) -> Iterator[None]:
    """Use ``run.threads`` inside the block, restore the previous count after."""
    previous = torch.get_num_threads()
    if run.threads is not None:
        torch.set_num_threads(run.threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
