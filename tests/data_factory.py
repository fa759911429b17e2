"""Small generated image classification sets in every local format ``fedadc`` reads.

Tests must not need the network, so these helpers write tiny, seeded data sets (by default
3 classes, 20 train and 5 test images per class, 12x12 pixels) to a temporary folder:

- :func:`write_disk_dataset`: a ``DatasetDict.save_to_disk`` folder (``data.source=disk``);
- :func:`write_imagefolder`: ``train/<class>/*.png`` and ``test/<class>/*.png``
  (``data.source=imagefolder``);
- :func:`write_parquet`: ``train.parquet`` / ``test.parquet`` (``data.source=parquet``).

Each class is visible in its pixels (a dominant colour, or a grey level for grayscale sets,
plus a class-specific stripe pattern and seeded noise), so :func:`visible_class` recovers the
label from an image and a test can check that images and labels stay aligned in any format,
whatever row order the loader uses. Rows are written class-interleaved: row ``i`` has class
``i % num_classes`` (see :func:`expected_labels`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

CLASS_NAMES = ("apple", "banana", "cherry")
"""Sorted, so ClassLabel ids (imagefolder sorts folder names) equal the written ids."""

IMAGE_SIZE = 12
TRAIN_PER_CLASS = 20
TEST_PER_CLASS = 5
_GRAY_LEVELS = (40, 128, 216)


def expected_labels(n_per_class: int, num_classes: int = len(CLASS_NAMES)) -> list[int]:
    """The labels in written row order: class-interleaved, ``i % num_classes``."""
    return [i % num_classes for i in range(n_per_class * num_classes)]


def make_image(
    label: int, rng: np.random.Generator, *, size: int = IMAGE_SIZE, grayscale: bool = False
) -> Image.Image:
    """One image whose class is visible: dominant channel (RGB) or grey level (L), with a
    class-specific stripe pattern (rows, columns, checker) and noise."""
    yy, xx = np.mgrid[0:size, 0:size]
    stripes = (yy % 2, xx % 2, (yy + xx) % 2)[label % 3].astype(np.float64)
    if grayscale:
        base = np.full((size, size), float(_GRAY_LEVELS[label % 3]))
        pixels = base + 20.0 * stripes + rng.normal(0.0, 6.0, (size, size))
        return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), mode="L")
    base = np.full((size, size, 3), 40.0)
    base[..., label % 3] = 200.0
    pixels = base + 30.0 * stripes[..., None] + rng.normal(0.0, 8.0, (size, size, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), mode="RGB")


def make_images(
    n_per_class: int, *, seed: int = 0, size: int = IMAGE_SIZE, grayscale: bool = False
) -> tuple[list[Image.Image], list[int]]:
    """Class-interleaved images and their labels (seeded)."""
    rng = np.random.default_rng(seed)
    labels = expected_labels(n_per_class)
    return [make_image(y, rng, size=size, grayscale=grayscale) for y in labels], labels


def visible_class(image: Image.Image) -> int:
    """The class an image of this factory shows (dominant channel, or nearest grey level)."""
    pixels = np.asarray(image, dtype=np.float64)
    if pixels.ndim == 2:
        return int(np.argmin([abs(pixels.mean() - 10.0 - g) for g in _GRAY_LEVELS]))
    return int(np.argmax(pixels.reshape(-1, pixels.shape[-1])[:, :3].mean(axis=0)))


def _folder(tmp_path: Path, kind: str, **options: object) -> Path:
    """A folder name per kind and non-default options, so variants never overwrite each other."""
    parts = [kind] + [key if value is True else f"{key}-{value}" for key, value in options.items()]
    return Path(tmp_path) / "_".join(parts)


def _non_default(**options: object) -> dict[str, object]:
    """The options that differ from the writers' defaults (False, "image", "label")."""
    defaults = {"image": "image", "label": "label"}
    return {k: v for k, v in options.items() if v is not False and v != defaults.get(k, False)}


def _dataset(
    n_per_class: int,
    seed: int,
    grayscale: bool,
    image_column: str,
    label_column: str | None,
    string_labels: bool,
):
    """A ``datasets.Dataset`` with an Image column and ClassLabel (or string) labels."""
    from datasets import ClassLabel, Dataset, Features, Value
    from datasets import Image as ImageFeature

    images, labels = make_images(n_per_class, seed=seed, grayscale=grayscale)
    columns: dict[str, list] = {image_column: images}
    features = {image_column: ImageFeature()}
    if label_column is not None:
        if string_labels:
            columns[label_column] = [CLASS_NAMES[y] for y in labels]
            features[label_column] = Value("string")
        else:
            columns[label_column] = labels
            features[label_column] = ClassLabel(names=list(CLASS_NAMES))
    return Dataset.from_dict(columns, features=Features(features))


def write_disk_dataset(
    tmp_path: Path,
    *,
    grayscale: bool = False,
    with_test: bool = True,
    image_column: str = "image",
    label_column: str | None = "label",
    string_labels: bool = False,
    train_per_class: int = TRAIN_PER_CLASS,
    test_per_class: int = TEST_PER_CLASS,
) -> Path:
    """Write a ``DatasetDict`` (``train``, and ``test`` unless ``with_test=False``) with
    ``save_to_disk``; returns its folder (for ``data.source=disk``, ``data.path=...``).

    ``label_column=None`` writes a data set without labels; ``string_labels`` stores class
    names instead of a ClassLabel feature. Train uses seed 0, test seed 1.
    """
    from datasets import DatasetDict

    splits = {
        "train": _dataset(train_per_class, 0, grayscale, image_column, label_column, string_labels)
    }
    if with_test:
        splits["test"] = _dataset(
            test_per_class, 1, grayscale, image_column, label_column, string_labels
        )
    out = _folder(
        tmp_path,
        "disk",
        **_non_default(
            grayscale=grayscale,
            no_test=not with_test,
            image=image_column,
            label=label_column,
            strings=string_labels,
        ),
    )
    DatasetDict(splits).save_to_disk(str(out))
    return out


def write_imagefolder(
    tmp_path: Path,
    *,
    grayscale: bool = False,
    with_test: bool = True,
    train_per_class: int = TRAIN_PER_CLASS,
    test_per_class: int = TEST_PER_CLASS,
) -> Path:
    """Write ``train/<class>/<i>.png`` (and ``test/...``); returns the root folder (for
    ``data.source=imagefolder``). Labels are the sorted class folder names."""
    out = _folder(
        tmp_path, "imagefolder", **_non_default(grayscale=grayscale, no_test=not with_test)
    )
    splits = [("train", train_per_class, 0)] + ([("test", test_per_class, 1)] if with_test else [])
    for split, n_per_class, seed in splits:
        images, labels = make_images(n_per_class, seed=seed, grayscale=grayscale)
        for i, (image, label) in enumerate(zip(images, labels, strict=True)):
            folder = out / split / CLASS_NAMES[label]
            folder.mkdir(parents=True, exist_ok=True)
            image.save(folder / f"{i:04d}.png")
    return out


def write_parquet(
    tmp_path: Path,
    *,
    grayscale: bool = False,
    with_test: bool = True,
    image_column: str = "image",
    label_column: str | None = "label",
    train_per_class: int = TRAIN_PER_CLASS,
    test_per_class: int = TEST_PER_CLASS,
) -> Path:
    """Write ``train.parquet`` (and ``test.parquet``) with ``Dataset.to_parquet``; returns
    the folder (for ``data.source=parquet``; ``<folder>/train.parquet`` works as a path too)."""
    out = _folder(
        tmp_path,
        "parquet",
        **_non_default(
            grayscale=grayscale, no_test=not with_test, image=image_column, label=label_column
        ),
    )
    out.mkdir(parents=True, exist_ok=True)
    splits = [("train", train_per_class, 0)] + ([("test", test_per_class, 1)] if with_test else [])
    for split, n_per_class, seed in splits:
        ds = _dataset(n_per_class, seed, grayscale, image_column, label_column, False)
        ds.to_parquet(str(out / f"{split}.parquet"))
    return out
