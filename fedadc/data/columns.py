"""Reading a loaded data set's columns: which splits, the image column as images, the label
column as class ids. Errors name the ``data.*`` key to set and what the data holds."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from datasets import Dataset

log = logging.getLogger("fedadc")


def pick_splits(
    splits: dict[str, Dataset],
    name: str,
    *,
    train_split: str,
    test_split: str | None,
    test_fraction: float,
) -> tuple[Dataset, Dataset | None]:
    """(train, test or None): a missing test split means "hold one out" (logged)."""
    if train_split not in splits:
        raise ValueError(
            f"{name}: no split {train_split!r}; available splits: {sorted(splits)}. "
            "Set data.train_split to one of them."
        )
    test = None
    if test_split is not None:
        test = splits.get(test_split)
        if test is None:
            log.info(
                "%s has no split %r (available: %s): holding out %.0f%% of %r as test",
                name, test_split, sorted(splits), 100 * test_fraction, train_split,
            )  # fmt: skip
    return splits[train_split], test


def check_columns(
    ds: Dataset, name: str, split: str, *, image_column: str, label_column: str
) -> None:
    """Both configured columns exist, else say which key to set and what is there."""
    for key, column in (("image_column", image_column), ("label_column", label_column)):
        if column not in ds.column_names:
            hint = ""
            if key == "label_column":
                hint = " (a data set without labels cannot train a classifier)"
            raise ValueError(
                f"{name} ({split} split) has no column {column!r} for data.{key}; available "
                f"columns: {ds.column_names}. Set data.{key} to one of them{hint}."
            )


def ensure_image_feature(ds: Dataset, column: str, name: str) -> Dataset:
    """Decode the image column as images when it is not declared so: a ``{"bytes", "path"}``
    struct (parquet written without ``datasets`` metadata) or file paths."""
    from datasets import Image, Value

    feature = ds.features[column]
    if isinstance(feature, dict) and {"bytes", "path"} <= set(feature):
        return ds.cast_column(column, Image())
    if isinstance(feature, Value):
        if feature.dtype in ("string", "large_string"):
            return ds.cast_column(column, Image())
        raise ValueError(
            f"{name}: data.image_column={column!r} holds {feature.dtype} values, not images; "
            f"columns: {dict(ds.features)}"
        )
    return ds


def _column(ds: Dataset, column: str) -> Any:
    """One column as a pyarrow array, without decoding any other column."""
    return ds.select_columns([column]).with_format("arrow")[:][column].combine_chunks()


def encode_labels(
    train: Dataset, test: Dataset | None, column: str, name: str
) -> tuple[torch.Tensor, torch.Tensor | None, int, list[str] | None]:
    """Class ids of both splits, the number of classes and (if known) the class names.

    ClassLabel -> its ids and names; integers -> themselves, ``num_classes = max + 1``;
    strings -> ids of the sorted unique names of both splits.
    """
    import pyarrow as pa
    from datasets import ClassLabel

    feature = train.features[column]
    arrays = [_column(ds, column) for ds in (train, test) if ds is not None]
    kinds = {str(a.type) for a in arrays}
    if all(pa.types.is_string(a.type) or pa.types.is_large_string(a.type) for a in arrays):
        values = [a.to_pylist() for a in arrays]
        if any(v is None for vs in values for v in vs):
            raise ValueError(f"{name}: data.label_column={column!r} has missing labels")
        names = sorted({v for vs in values for v in vs})
        ids = {n: i for i, n in enumerate(names)}
        encoded = [torch.tensor([ids[v] for v in vs], dtype=torch.long) for vs in values]
        num_classes = len(names)
    elif all(
        pa.types.is_integer(a.type) or pa.types.is_boolean(a.type) or pa.types.is_floating(a.type)
        for a in arrays
    ):
        encoded = []
        for array in arrays:
            if array.null_count:
                raise ValueError(f"{name}: data.label_column={column!r} has missing labels")
            values = np.asarray(array.to_numpy(zero_copy_only=False))
            whole = np.isfinite(values) & (values == np.round(values))
            if values.dtype.kind == "f" and not np.all(whole):
                raise ValueError(
                    f"{name}: data.label_column={column!r} holds non-integer numbers; "
                    "expected class ids, class names or a ClassLabel"
                )
            encoded.append(torch.as_tensor(values.astype(np.int64)))
        names = list(feature.names) if isinstance(feature, ClassLabel) else None
        test_feature = test.features[column] if test is not None else None
        if names and isinstance(test_feature, ClassLabel) and list(test_feature.names) != names:
            raise ValueError(f"{name}: train and test splits have different class names")
        low = min(int(e.min()) for e in encoded if e.numel())
        if low < 0:
            raise ValueError(
                f"{name}: data.label_column={column!r} has negative labels (min {low}); a split "
                "without labels (e.g. -1) cannot be used: set data.test_split=null to hold out "
                "part of train instead"
            )
        high = max(int(e.max()) for e in encoded if e.numel())
        num_classes = len(names) if names else high + 1
        if high >= num_classes:
            raise ValueError(f"{name}: label {high} out of range for {num_classes} classes")
    else:
        raise ValueError(
            f"{name}: data.label_column={column!r} has type {sorted(kinds)}; expected a "
            "ClassLabel, integer class ids or class-name strings (one label per image)"
        )
    return encoded[0], encoded[1] if test is not None else None, num_classes, names
