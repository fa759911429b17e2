"""scikit-learn's 8x8 handwritten digits: the embedded default data set (no download)."""

from __future__ import annotations

import torch

from fedadc.data.normalize import Normalization
from fedadc.data.tensors import ImageData, TensorSplit


def digits(
    seed: int = 0,
    test_fraction: float = 0.2,
    channels: int = 1,
    normalization: Normalization | None = None,
) -> ImageData:
    """1797 grayscale 8x8 images of 10 classes, stratified train/test split by ``seed``.

    Pixels (0..16) are scaled to [0, 1] and standardised with the training mean/std (one
    over all pixels), or with ``normalization`` (per channel) when given.
    ``channels=3`` repeats the gray channel for RGB models.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    # imported here: scikit-learn costs 1.3 s to import, paid by every deployed ClientApp
    # process (one per message) even when the run's data is not digits
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = torch.from_numpy(bunch.images).float().div_(16.0).unsqueeze(1)
    labels = torch.from_numpy(bunch.target).long()
    train_idx, test_idx = train_test_split(
        torch.arange(len(labels)).numpy(),
        test_size=test_fraction,
        random_state=seed,
        stratify=labels.numpy(),
    )
    if normalization is None:
        mean, std = images[train_idx].mean(), images[train_idx].std()
        images = ((images - mean) / std).repeat(1, channels, 1, 1)
        normalization = Normalization(
            (float(mean),) * channels, (float(std),) * channels, "dataset", len(train_idx)
        )
    else:
        shape = (1, channels, 1, 1)
        mean_c = torch.tensor(normalization.mean).view(shape)
        std_c = torch.tensor(normalization.std).view(shape)
        images = (images.repeat(1, channels, 1, 1) - mean_c) / std_c
    return ImageData(
        train=TensorSplit(images[train_idx], labels[train_idx]),
        test=TensorSplit(images[test_idx], labels[test_idx]),
        num_classes=10,
        image_shape=(channels, 8, 8),
        name="digits",
        normalization=normalization,
    )
