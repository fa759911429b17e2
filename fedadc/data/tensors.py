"""Image classification data as the trainers consume it: labels up front, images by batch.

``ImageSplit`` is the interface: labels are known without decoding images (partitioners
need them), images are produced per batch, already transformed and normalised, with
augmentation seeded by the caller so any process can reproduce a batch exactly.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import torch

from fedadc.data.normalize import Normalization


class ImageSplit(ABC):
    """N labelled images; ``batch`` returns (B x C x H x W float32, B int64)."""

    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @abstractmethod
    def batch(
        self, indices: torch.Tensor, augment_seed: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Images and labels of rows ``indices``; ``augment_seed=None`` means no
        augmentation (evaluation), an int makes training augmentation reproducible."""

    @abstractmethod
    def subset(self, indices: torch.Tensor | list[int]) -> ImageSplit:
        """The rows ``indices`` as a split of their own (a client's partition)."""


class TensorSplit(ImageSplit):
    """Images already in memory as one tensor (small data sets such as digits);
    ``train_transform`` (tensor -> tensor, e.g. a random crop) is applied per image, seeded,
    when a batch is asked for with an ``augment_seed``."""

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        train_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        if images.ndim != 4:
            raise ValueError(f"images must be N x C x H x W, got {tuple(images.shape)}")
        if labels.shape != (images.shape[0],):
            raise ValueError(
                f"labels must have one entry per image ({images.shape[0]}), "
                f"got shape {tuple(labels.shape)}"
            )
        self.images = images.float()
        self.labels = labels.long()
        self.train_transform = train_transform

    def batch(
        self, indices: torch.Tensor, augment_seed: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        images = self.images[indices]
        if augment_seed is not None and self.train_transform is not None:
            # imported here: transforms imports torchvision, tensors stays light
            from fedadc.data.transforms import apply_seeded

            images = apply_seeded(self.train_transform, list(images), augment_seed)
        return images, self.labels[indices]

    def subset(self, indices: torch.Tensor | list[int]) -> TensorSplit:
        idx = torch.as_tensor(indices, dtype=torch.long)
        return TensorSplit(self.images[idx], self.labels[idx], self.train_transform)


@dataclass(frozen=True)
class ImageData:
    train: ImageSplit
    test: ImageSplit
    num_classes: int
    image_shape: tuple[int, int, int]
    """C x H x W of the batches this data produces."""
    name: str = "data"
    normalization: Normalization | None = None
    """The per-channel mean/std its images were normalised with (recorded by a run)."""


def batches(
    num_samples: int, batch_size: int, generator: torch.Generator, drop_last: bool = True
) -> list[torch.Tensor]:
    """Shuffled index batches for one epoch (full batches only by default, as the paper)."""
    order = torch.randperm(num_samples, generator=generator)
    stop = num_samples - num_samples % batch_size if drop_last else num_samples
    return [order[i : i + batch_size] for i in range(0, stop, batch_size)]
