"""In-memory image classification data as tensors, the form the trainers consume."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ImageSplit:
    images: torch.Tensor
    """N x C x H x W float32, already normalised."""
    labels: torch.Tensor
    """N int64 class ids."""

    def __post_init__(self) -> None:
        if self.images.ndim != 4:
            raise ValueError(f"images must be N x C x H x W, got {tuple(self.images.shape)}")
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(
                f"labels must have one entry per image ({self.images.shape[0]}), "
                f"got shape {tuple(self.labels.shape)}"
            )

    def __len__(self) -> int:
        return self.labels.shape[0]

    def subset(self, indices: torch.Tensor | list[int]) -> ImageSplit:
        idx = torch.as_tensor(indices, dtype=torch.long)
        return ImageSplit(self.images[idx], self.labels[idx])


@dataclass(frozen=True)
class ImageData:
    train: ImageSplit
    test: ImageSplit
    num_classes: int
    name: str = "data"

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train.images.shape[1:])  # type: ignore[return-value]


def batches(
    split: ImageSplit, batch_size: int, generator: torch.Generator, drop_last: bool = True
) -> list[torch.Tensor]:
    """Shuffled index batches for one epoch (full batches only by default, as the paper)."""
    order = torch.randperm(len(split), generator=generator)
    stop = len(order) - len(order) % batch_size if drop_last else len(order)
    return [order[i : i + batch_size] for i in range(0, stop, batch_size)]
