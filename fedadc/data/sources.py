"""Load a data source into :class:`ImageData`: the one entry point, :func:`load_image_data`.

Sources: ``digits`` (embedded, in memory), ``hub`` (a Hugging Face data set name), ``disk``
(``save_to_disk`` folder), ``imagefolder`` (``<split>/<class>/*.png``), ``parquet`` (files or
a folder). Everything but digits stays a lazy :class:`HFImageSplit`: labels are read once
from the label column (partitioners need them), images are decoded and transformed per batch,
so data sets larger than memory work and each client process decodes only what it trains on.
Arguments are plain values (the ``data.*`` keys of the run config, unpacked by the caller).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from fedadc.data.columns import check_columns, encode_labels, ensure_image_feature, pick_splits
from fedadc.data.digits import digits
from fedadc.data.hf_split import HFImageSplit
from fedadc.data.hub import load_hub_splits
from fedadc.data.local import load_local_splits
from fedadc.data.normalize import STATS_IMAGES, STATS_STREAM, Normalization, none, pixel_statistics
from fedadc.data.sampling import hold_out, subsample, subsample_indices
from fedadc.data.tensors import ImageData, TensorSplit
from fedadc.data.transforms import (
    build_tensor_augment,
    build_transforms,
    resize_steps,
    resolve_augment,
)

if TYPE_CHECKING:
    from datasets import Dataset

log = logging.getLogger("fedadc")

SOURCES = ("digits", "hub", "disk", "imagefolder", "parquet")
PATH_SOURCES = ("disk", "imagefolder", "parquet")
"""The sources read from ``path`` (the others are embedded or named on the hub)."""
GRAYSCALE_MODES = frozenset({"1", "L", "LA", "I", "I;16", "F"})
"""PIL modes of single-channel images (``in_chans=None`` picks 1 when all sampled are)."""
_SNIFF_IMAGES = 8
_STATS_CHUNK = 64


def check_source(source: str, name: str | None, path: str | None) -> None:
    """``source`` is known and has what it needs: a hub ``name`` or a local ``path``."""
    if source not in SOURCES:
        raise ValueError(f"data.source must be one of {list(SOURCES)}, got {source!r}")
    if source == "hub" and not name:
        raise ValueError("data.name must name a Hugging Face dataset when data.source=hub")
    if source in PATH_SOURCES and not path:
        raise ValueError(f"data.path is required when data.source={source}")


def load_image_data(
    source: str = "digits",
    *,
    name: str | None = None,
    path: str | None = None,
    image_column: str = "image",
    label_column: str = "label",
    train_split: str = "train",
    test_split: str | None = "test",
    test_fraction: float = 0.2,
    augment: str = "auto",
    max_train_samples: int | None = None,
    max_test_samples: int | None = None,
    img_size: int | tuple[int, int] | None = None,
    in_chans: int | None = None,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    normalize: str | Normalization = "dataset",
    max_native_size: int | None = None,
) -> ImageData:
    """The train/test data of ``source``, producing ``in_chans`` x ``img_size`` batches.

    ``name``/``path`` locate the data (hub name; folder or file), ``*_column`` and
    ``*_split`` name what to read; without a test split a stratified ``test_fraction`` of
    train is held out. ``img_size=None`` keeps the data's native size (of its first image),
    ``in_chans=None`` picks 1 when the first images are all grayscale, else 3. ``seed``
    drives the hold-out and the ``max_*_samples`` subsampling. ``cache_dir`` is where
    ``datasets`` caches hub/imagefolder/parquet conversions (default: its own cache).
    ``normalize``: ``"dataset"`` (the training split's per-channel statistics; digits: its
    own), ``"none"`` (pixels in [0, 1]) or given :class:`Normalization`; the one used is
    ``ImageData.normalization``. ``max_native_size`` caps the longer side of the native
    size (``img_size=None``; aspect ratio kept), so that unknown large images do not make
    a from-scratch ViT's token count explode.
    """
    check_source(source, name, path)
    if not isinstance(normalize, Normalization) and normalize not in ("dataset", "none"):
        raise ValueError(
            f"normalize must be 'dataset', 'none' or a Normalization, got {normalize!r} "
            "(data.normalize=auto|model are resolved from the model by fedadc.federated.build)"
        )
    if in_chans not in (None, 1, 3):
        raise ValueError(f"in_chans must be 1, 3 or None (from the data), got {in_chans}")
    size = _pair(img_size) if img_size is not None else None
    limits = {"max_train_samples": max_train_samples, "max_test_samples": max_test_samples}
    for key, value in limits.items():
        if value is not None and value < 1:
            raise ValueError(f"data.{key} must be >= 1 or null, got {value}")
    if source == "digits":
        return _load_digits(
            size,
            in_chans,
            seed,
            test_fraction,
            (max_train_samples, max_test_samples),
            normalize,
            augment,
        )

    label = name or (Path(path).name if path else source)
    cache = str(cache_dir) if cache_dir is not None else None
    if source == "hub":
        splits = load_hub_splits(name or "", cache)
    else:
        splits = load_local_splits(
            source,
            Path(path or ""),
            train_split=train_split,
            test_split=test_split,
            cache_dir=cache,
        )
    train, test = pick_splits(
        splits, label, train_split=train_split, test_split=test_split, test_fraction=test_fraction
    )
    columns = {"image_column": image_column, "label_column": label_column}
    check_columns(train, label, train_split, **columns)
    train = ensure_image_feature(train, image_column, label)
    if test is not None:
        check_columns(test, label, str(test_split), **columns)
        test = ensure_image_feature(test, image_column, label)
    train_labels, test_labels, num_classes, class_names = encode_labels(
        train, test, label_column, label
    )
    if test is None:
        train, train_labels, test, test_labels = hold_out(train, train_labels, test_fraction, seed)
    train, train_labels = subsample(train, train_labels, max_train_samples, seed, 0)
    test, test_labels = subsample(test, test_labels, max_test_samples, seed, 1)
    if len(train) == 0 or len(test) == 0:
        raise ValueError(f"{label}: empty split (train {len(train)}, test {len(test)} rows)")
    return _lazy_data(
        label,
        (train, train_labels),
        (test, test_labels),
        num_classes,
        class_names,
        image_column=image_column,
        img_size=size,
        in_chans=in_chans,
        augment=augment,
        normalize=normalize,
        max_native_size=max_native_size,
        seed=seed,
    )


def _lazy_data(
    name: str,
    train_rows: tuple[Dataset, torch.Tensor],
    test_rows: tuple[Dataset, torch.Tensor],
    num_classes: int,
    class_names: list[str] | None,
    *,
    image_column: str,
    img_size: tuple[int, int] | None,
    in_chans: int | None,
    augment: str,
    normalize: str | Normalization,
    max_native_size: int | None,
    seed: int,
) -> ImageData:
    """Both splits as :class:`HFImageSplit`, with size and channels read off the first
    images when not given, the normalisation, and the transforms for them."""
    (train, train_labels), (test, test_labels) = train_rows, test_rows
    sample = train.select_columns([image_column]).select(range(min(_SNIFF_IMAGES, len(train))))
    first = list(sample[image_column])
    if img_size is None:
        img_size = _native_size(name, first, max_native_size)
    if in_chans is None:
        in_chans = 1 if all(_mode(image) in GRAYSCALE_MODES for image in first) else 3
    augment = resolve_augment(augment, img_size)
    if isinstance(normalize, Normalization):
        norm = normalize.channels(in_chans)
    elif normalize == "none":
        norm = none(in_chans)
    else:
        norm = _dataset_statistics(train, image_column, img_size, in_chans, seed)
    train_tf = build_transforms(augment, img_size, in_chans, train=True, normalization=norm)
    eval_tf = build_transforms(augment, img_size, in_chans, train=False, normalization=norm)
    shape = (in_chans, *img_size)
    log.info(
        "data %s: %d train / %d test rows, %d classes, batches %s, augment=%s, "
        "normalize=%s mean=%s std=%s",
        name, len(train), len(test), num_classes, shape, augment,
        norm.kind, _fmt(norm.mean), _fmt(norm.std),
    )  # fmt: skip
    common = dict(image_column=image_column, image_shape=shape, class_names=class_names)
    return ImageData(
        train=HFImageSplit(
            train, train_labels, train_transform=train_tf, eval_transform=eval_tf, **common
        ),
        test=HFImageSplit(
            test, test_labels, train_transform=eval_tf, eval_transform=eval_tf, **common
        ),
        num_classes=num_classes,
        image_shape=shape,
        name=name,
        normalization=norm,
    )


def _dataset_statistics(
    train: Dataset, image_column: str, img_size: tuple[int, int], in_chans: int, seed: int
) -> Normalization:
    """Per-channel statistics of a seeded sample of the training rows, resized as every
    pipeline resizes them, before augmentation (decoded in chunks: bounded memory)."""
    keep = subsample_indices(len(train), STATS_IMAGES, seed, STATS_STREAM)
    rows = train.select_columns([image_column])
    if keep is not None:
        rows = rows.select(keep.tolist())
    resize = resize_steps(img_size, in_chans)

    def images() -> Iterator[Any]:
        for start in range(0, len(rows), _STATS_CHUNK):
            for image in rows[start : start + _STATS_CHUNK][image_column]:
                yield resize(image)

    return pixel_statistics(images(), in_chans)


def _fmt(values: Sequence[float]) -> str:
    return "[" + ", ".join(f"{v:.4f}" for v in values) + "]"


def _load_digits(
    img_size: tuple[int, int] | None,
    in_chans: int | None,
    seed: int,
    test_fraction: float,
    limits: tuple[int | None, int | None],
    normalize: str | Normalization,
    augment: str,
) -> ImageData:
    """The embedded digits, bilinearly resized when a model wants another size (e.g. a
    pretrained 224-pixel ViT), with ``augment`` applied to the normalised training tensors
    (:func:`build_tensor_augment`: ``auto`` = none, ``light`` on request). ``dataset``:
    digits' own training mean/std (one over all pixels, as it always was)."""
    channels = in_chans or 1
    given = None
    if isinstance(normalize, Normalization):
        given = normalize.channels(channels)
    elif normalize == "none":
        given = none(channels)
    data = digits(seed=seed, test_fraction=test_fraction, channels=channels, normalization=given)
    channels = data.image_shape[0]
    size = img_size or data.image_shape[1:]
    splits = []
    for stream, (split, limit) in enumerate(zip((data.train, data.test), limits, strict=True)):
        assert isinstance(split, TensorSplit)
        images, labels = split.images, split.labels
        keep = subsample_indices(len(split), limit, seed, stream)
        if keep is not None:
            images, labels = images[keep], labels[keep]
        if tuple(size) != tuple(images.shape[-2:]):
            images = F.interpolate(images, size=tuple(size), mode="bilinear", align_corners=False)
        splits.append((images, labels))
    augment_tf = build_tensor_augment(augment, tuple(size), data.normalization)
    log.info("data digits: augment=%s", "none" if augment_tf is None else "light")
    (train_images, train_labels), (test_images, test_labels) = splits
    return ImageData(
        train=TensorSplit(train_images, train_labels, train_transform=augment_tf),
        test=TensorSplit(test_images, test_labels),
        num_classes=data.num_classes,
        image_shape=(channels, *size),
        name="digits",
        normalization=data.normalization,
    )


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return (size, size)
    height, width = (int(s) for s in size)
    return (height, width)


def _mode(image: Any) -> str:
    if hasattr(image, "mode"):
        return str(image.mode)
    array = np.asarray(image)
    return "L" if array.ndim == 2 or (array.ndim == 3 and array.shape[-1] == 1) else "RGB"


def _native_size(name: str, images: Sequence[Any], max_size: int | None) -> tuple[int, int]:
    """(H, W) of the sampled images (their median when sizes differ), the longer side
    capped at ``max_size`` with the aspect ratio kept."""
    sizes = [_image_size(image) for image in images]
    height, width = (int(np.median([s[i] for s in sizes])) for i in (0, 1))
    if len(set(sizes)) > 1:
        log.warning(
            "data %s: the first images differ in size (%s): using (%d, %d); set "
            "data.img_size to choose", name, sorted(set(sizes)), height, width,
        )  # fmt: skip
    if max_size is not None and max(height, width) > max_size:
        scale = max_size / max(height, width)
        capped = (max(1, round(height * scale)), max(1, round(width * scale)))
        log.warning(
            "data %s: native size (%d, %d) resized to %s, the largest the from-scratch "
            "model takes by default (%d px; more tokens grow its cost quadratically): set "
            "data.img_size for another size", name, height, width, capped, max_size,
        )  # fmt: skip
        return capped
    return (height, width)


def _image_size(image: Any) -> tuple[int, int]:
    """(H, W) of a PIL image or H x W [x C] array."""
    if hasattr(image, "size") and not isinstance(image, np.ndarray):
        width, height = image.size
        return (int(height), int(width))
    array = np.asarray(image)
    return (int(array.shape[0]), int(array.shape[1]))
