"""Seeded row selection: the held-out test split and the ``max_*_samples`` subsets."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from datasets import Dataset

log = logging.getLogger("fedadc")


def hold_out(
    ds: Dataset, labels: torch.Tensor, fraction: float, seed: int
) -> tuple[Dataset, torch.Tensor, Dataset, torch.Tensor]:
    """A stratified, seeded ``fraction`` of ``ds`` as test (unstratified when some class is
    too small to be split)."""
    from sklearn.model_selection import train_test_split

    rows = np.arange(len(labels))
    try:
        train_idx, test_idx = train_test_split(
            rows, test_size=fraction, random_state=seed, stratify=labels.numpy()
        )
    except ValueError as exc:
        log.warning("stratified hold-out impossible (%s); holding out unstratified", exc)
        train_idx, test_idx = train_test_split(rows, test_size=fraction, random_state=seed)
    train_idx, test_idx = np.sort(train_idx), np.sort(test_idx)  # sequential reads
    return (
        ds.select(train_idx.tolist()),
        labels[torch.from_numpy(train_idx)],
        ds.select(test_idx.tolist()),
        labels[torch.from_numpy(test_idx)],
    )


def subsample_indices(n: int, limit: int | None, seed: int, stream: int) -> torch.Tensor | None:
    """Sorted indices of a seeded random ``limit`` of ``n`` rows, or None to keep all."""
    if limit is None or limit >= n:
        return None
    rng = np.random.default_rng([seed, stream])
    return torch.from_numpy(np.sort(rng.permutation(n)[:limit]))


def subsample(
    ds: Dataset, labels: torch.Tensor, limit: int | None, seed: int, stream: int
) -> tuple[Dataset, torch.Tensor]:
    keep = subsample_indices(len(labels), limit, seed, stream)
    if keep is None:
        return ds, labels
    return ds.select(keep.tolist()), labels[keep]
