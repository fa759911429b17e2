"""A lazy image split over a Hugging Face ``datasets.Dataset`` (hub and local sources)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from fedadc.data.tensors import ImageSplit
from fedadc.data.transforms import Transform, apply_seeded

if TYPE_CHECKING:
    from datasets import Dataset


class HFImageSplit(ImageSplit):
    """A lazy split over a ``datasets.Dataset``: labels in memory, images decoded per batch.

    Only the image column is kept (other columns, possibly other images, are never decoded).
    ``batch`` applies ``eval_transform`` when ``augment_seed`` is None and ``train_transform``
    under :func:`apply_seeded` otherwise; pass the eval transform twice for a test split.
    """

    def __init__(
        self,
        dataset: Dataset,
        labels: torch.Tensor,
        *,
        image_column: str,
        train_transform: Transform,
        eval_transform: Transform,
        image_shape: tuple[int, int, int],
        class_names: Sequence[str] | None = None,
    ) -> None:
        if labels.shape != (len(dataset),):
            raise ValueError(
                f"labels must have one entry per row ({len(dataset)}), got {tuple(labels.shape)}"
            )
        if image_column not in dataset.column_names:
            raise ValueError(f"image column {image_column!r} not in columns {dataset.column_names}")
        self.dataset = dataset.select_columns([image_column])
        self.labels = labels.long()
        self.image_column = image_column
        self.train_transform = train_transform
        self.eval_transform = eval_transform
        self.image_shape = image_shape
        self.class_names = list(class_names) if class_names is not None else None

    def decode(self, indices: Sequence[int]) -> list[Any]:
        """The decoded images (PIL) of rows ``indices``, untransformed."""
        return self.dataset[list(indices)][self.image_column]

    def batch(
        self, indices: torch.Tensor, augment_seed: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.as_tensor(indices, dtype=torch.long).reshape(-1)
        if idx.numel() == 0:
            return torch.empty((0, *self.image_shape)), self.labels[idx]
        rows = self.decode(idx.tolist())
        if augment_seed is None:
            images = torch.stack([self.eval_transform(image) for image in rows])
        else:
            images = apply_seeded(self.train_transform, rows, augment_seed)
        return images.float(), self.labels[idx]

    def subset(self, indices: torch.Tensor | list[int]) -> HFImageSplit:
        idx = torch.as_tensor(indices, dtype=torch.long).reshape(-1)
        return HFImageSplit(
            self.dataset.select(idx.tolist()),
            self.labels[idx],
            image_column=self.image_column,
            train_transform=self.train_transform,
            eval_transform=self.eval_transform,
            image_shape=self.image_shape,
            class_names=self.class_names,
        )
