"""Load ``data.*`` (a :class:`~fedadc.config.schema.DataConfig`) into :class:`ImageData`.

Sources: ``digits`` (embedded, in memory), ``hub`` (a Hugging Face data set name), ``disk``
(``save_to_disk`` folder), ``imagefolder`` (``<split>/<class>/*.png``), ``parquet`` (files or
a folder). Everything but digits stays a lazy :class:`HFImageSplit`: labels are read once
from the label column (partitioners need them), images are decoded and transformed per batch,
so data sets larger than memory work and each client process decodes only what it trains on.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from fedadc.data.digits import digits
from fedadc.data.tensors import ImageData, ImageSplit, TensorSplit
from fedadc.data.transforms import Transform, apply_seeded, build_transforms, resolve_augment

if TYPE_CHECKING:
    from datasets import Dataset

    from fedadc.config.schema import DataConfig

log = logging.getLogger("fedadc")

GRAYSCALE_MODES = frozenset({"1", "L", "LA", "I", "I;16", "F"})
"""PIL modes of single-channel images (``in_chans=None`` picks 1 when all sampled are)."""
_SNIFF_IMAGES = 8
_TRUE = {"1", "ON", "YES", "TRUE"}


class HubUnavailableError(RuntimeError):
    """A hub data set could not be loaded (no network, offline mode, unknown repo)."""


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


def load_image_data(
    cfg: DataConfig,
    *,
    img_size: tuple[int, int] | None,
    in_chans: int | None,
    seed: int,
    cache_dir: str | Path | None = None,
) -> ImageData:
    """The train/test data ``cfg`` describes, producing ``in_chans`` x ``img_size`` batches.

    ``img_size=None`` keeps the data's native size (of its first image), ``in_chans=None``
    picks 1 when the first images are all grayscale, else 3. ``seed`` drives the held-out
    test split and the ``max_*_samples`` subsampling. ``cache_dir`` is where ``datasets``
    caches hub/imagefolder/parquet conversions (default: its own cache).
    """
    if in_chans not in (None, 1, 3):
        raise ValueError(f"in_chans must be 1, 3 or None (from the data), got {in_chans}")
    if img_size is not None:
        img_size = _pair(img_size)
    for key in ("max_train_samples", "max_test_samples"):
        value = getattr(cfg, key)
        if value is not None and value < 1:
            raise ValueError(f"data.{key} must be >= 1 or null, got {value}")
    if cfg.source == "digits":
        return _load_digits(cfg, img_size=img_size, in_chans=in_chans, seed=seed)

    name = cfg.name or (Path(cfg.path).name if cfg.path else cfg.source)
    splits = _load_splits(cfg, cache_dir)
    train, test = _pick_splits(cfg, splits, name)
    _check_columns(cfg, train, name, cfg.train_split)
    train = _ensure_image_feature(train, cfg.image_column, name)
    if test is not None:
        _check_columns(cfg, test, name, str(cfg.test_split))
        test = _ensure_image_feature(test, cfg.image_column, name)
    train_labels, test_labels, num_classes, class_names = _encode_labels(
        train, test, cfg.label_column, name
    )
    if test is None:
        train, train_labels, test, test_labels = _hold_out(
            train, train_labels, cfg.test_fraction, seed
        )
    train, train_labels = _subsample(train, train_labels, cfg.max_train_samples, seed, 0)
    test, test_labels = _subsample(test, test_labels, cfg.max_test_samples, seed, 1)
    if len(train) == 0 or len(test) == 0:
        raise ValueError(f"{name}: empty split (train {len(train)}, test {len(test)} rows)")

    sample = train.select_columns([cfg.image_column]).select(range(min(_SNIFF_IMAGES, len(train))))
    first = list(sample[cfg.image_column])
    if img_size is None:
        img_size = _native_size(first[0])
    if in_chans is None:
        in_chans = 1 if all(_mode(image) in GRAYSCALE_MODES for image in first) else 3
    augment = resolve_augment(cfg.augment, img_size)
    train_tf = build_transforms(augment, img_size, in_chans, train=True)
    eval_tf = build_transforms(augment, img_size, in_chans, train=False)
    shape = (in_chans, *img_size)
    log.info(
        "data %s: %d train / %d test rows, %d classes, batches %s, augment=%s",
        name, len(train), len(test), num_classes, shape, augment,
    )  # fmt: skip
    common = dict(image_column=cfg.image_column, image_shape=shape, class_names=class_names)
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
    )


# --------------------------------------------------------------------------------------
# digits


def _load_digits(
    cfg: DataConfig, *, img_size: tuple[int, int] | None, in_chans: int | None, seed: int
) -> ImageData:
    """The embedded digits, bilinearly resized when a model wants another size (e.g. a
    pretrained 224-pixel ViT). No augmentation: the images are already tensors."""
    data = digits(seed=seed, test_fraction=cfg.test_fraction, channels=in_chans or 1)
    channels = data.image_shape[0]
    size = img_size or data.image_shape[1:]
    splits = []
    limits = (cfg.max_train_samples, cfg.max_test_samples)
    for stream, (split, limit) in enumerate(zip((data.train, data.test), limits, strict=True)):
        assert isinstance(split, TensorSplit)
        images, labels = split.images, split.labels
        keep = _subsample_indices(len(split), limit, seed, stream)
        if keep is not None:
            images, labels = images[keep], labels[keep]
        if tuple(size) != tuple(images.shape[-2:]):
            images = F.interpolate(images, size=tuple(size), mode="bilinear", align_corners=False)
        splits.append(TensorSplit(images, labels))
    return ImageData(
        train=splits[0],
        test=splits[1],
        num_classes=data.num_classes,
        image_shape=(channels, *size),
        name="digits",
    )


# --------------------------------------------------------------------------------------
# loading splits


def _load_splits(cfg: DataConfig, cache_dir: str | Path | None) -> dict[str, Dataset]:
    """All splits the source offers, by name."""
    import datasets

    cache = str(cache_dir) if cache_dir is not None else None
    if cfg.source == "hub":
        return dict(_load_hub(cfg.name or "", cache))
    path = Path(cfg.path or "")
    if not path.exists():
        raise FileNotFoundError(
            f"data.path={str(path)!r} does not exist (data.source={cfg.source})"
        )
    if cfg.source == "disk":
        try:
            loaded = datasets.load_from_disk(str(path))
        except FileNotFoundError as exc:
            raise FileNotFoundError(
                f"data.path={str(path)!r} is not a folder written by Dataset.save_to_disk or "
                f"DatasetDict.save_to_disk (data.source=disk): {exc}"
            ) from exc
        if isinstance(loaded, datasets.Dataset):
            # A single split: it is the training data, and the test split is held out.
            return {cfg.train_split: loaded}
        return dict(loaded)
    if cfg.source == "imagefolder":
        if not path.is_dir():
            raise ValueError(
                f"data.path={str(path)!r} must be a folder for data.source=imagefolder"
            )
        return dict(datasets.load_dataset("imagefolder", data_dir=str(path), cache_dir=cache))
    if cfg.source == "parquet":
        files = _parquet_files(path, cfg.train_split, cfg.test_split)
        return dict(datasets.load_dataset("parquet", data_files=files, cache_dir=cache))
    raise ValueError(f"unknown data.source {cfg.source!r}")


def _parquet_files(path: Path, train_split: str, test_split: str | None) -> dict[str, list[str]]:
    """Data files by split: a single file is the train split; in a folder (searched
    recursively, as the Hub lays files out under ``data/``) ``<train_split>*.parquet`` and
    ``<test_split>*.parquet``, or every ``*.parquet`` as train when no file is named so."""
    if path.is_file():
        return {train_split: [str(path)]}
    train = sorted(str(p) for p in path.rglob(f"{train_split}*.parquet"))
    test = sorted(str(p) for p in path.rglob(f"{test_split}*.parquet")) if test_split else []
    if not train:
        train = sorted(str(p) for p in path.rglob("*.parquet") if str(p) not in test)
    if not train:
        raise FileNotFoundError(f"no *.parquet files under data.path={str(path)!r}")
    return {train_split: train, **({test_split: test} if test and test_split else {})}


@contextmanager
def _offline_from_env() -> Iterator[None]:
    """``datasets`` and ``huggingface_hub`` read HF_HUB_OFFLINE once, at import; honour its
    value now, so setting it later (a test, a launcher) still makes hub access fail fast."""
    flags = (os.environ.get("HF_HUB_OFFLINE", ""), os.environ.get("HF_DATASETS_OFFLINE", ""))
    if not any(flag.upper() in _TRUE for flag in flags):
        yield
        return
    import datasets.config
    import huggingface_hub.constants

    saved = (datasets.config.HF_HUB_OFFLINE, huggingface_hub.constants.HF_HUB_OFFLINE)
    datasets.config.HF_HUB_OFFLINE = huggingface_hub.constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, huggingface_hub.constants.HF_HUB_OFFLINE = saved


def _hub_errors() -> tuple[type[BaseException], ...]:
    """Exceptions meaning "the hub (or this repo on it) is not reachable"."""
    errors: tuple[type[BaseException], ...] = (OSError, ConnectionError, TimeoutError)
    try:
        import httpx

        errors += (httpx.HTTPError,)
    except ImportError:  # pragma: no cover - httpx comes with huggingface_hub
        pass
    try:
        import requests

        errors += (requests.RequestException,)
    except ImportError:  # pragma: no cover
        pass
    return errors


def _load_hub(name: str, cache_dir: str | None) -> dict[str, Dataset]:
    """All splits of hub data set ``name``; unreachable -> :class:`HubUnavailableError`."""
    import datasets

    try:
        with _offline_from_env():
            return dict(datasets.load_dataset(name, cache_dir=cache_dir))
    except _hub_errors() as exc:
        offline = bool(datasets.config.HF_HUB_OFFLINE) or any(
            os.environ.get(k, "").upper() in _TRUE
            for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
        )
        why = (
            "offline mode is on (HF_HUB_OFFLINE)" if offline else "no network, or no such data set"
        )
        raise HubUnavailableError(
            f"Could not load data set {name!r} from the Hugging Face hub: the hub could not be "
            f"reached or does not have it ({why}; {type(exc).__name__}: {exc}). Use a local "
            "copy instead: data.source=disk|imagefolder|parquet with data.path=... . To make "
            f"one where the hub is reachable: datasets.load_dataset({name!r}).save_to_disk(PATH)"
            ", then data.source=disk data.path=PATH."
        ) from exc


def _pick_splits(
    cfg: DataConfig, splits: dict[str, Dataset], name: str
) -> tuple[Dataset, Dataset | None]:
    """(train, test or None): a missing test split means "hold one out" (logged)."""
    if cfg.train_split not in splits:
        raise ValueError(
            f"{name}: no split {cfg.train_split!r}; available splits: {sorted(splits)}. "
            "Set data.train_split to one of them."
        )
    test = None
    if cfg.test_split is not None:
        test = splits.get(cfg.test_split)
        if test is None:
            log.info(
                "%s has no split %r (available: %s): holding out %.0f%% of %r as test",
                name, cfg.test_split, sorted(splits), 100 * cfg.test_fraction, cfg.train_split,
            )  # fmt: skip
    return splits[cfg.train_split], test


def _check_columns(cfg: DataConfig, ds: Dataset, name: str, split: str) -> None:
    """Both configured columns exist, else say which key to set and what is there."""
    for key in ("image_column", "label_column"):
        column = getattr(cfg, key)
        if column not in ds.column_names:
            hint = ""
            if key == "label_column":
                hint = " (a data set without labels cannot train a classifier)"
            raise ValueError(
                f"{name} ({split} split) has no column {column!r} for data.{key}; available "
                f"columns: {ds.column_names}. Set data.{key} to one of them{hint}."
            )


def _ensure_image_feature(ds: Dataset, column: str, name: str) -> Dataset:
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


def _encode_labels(
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


# --------------------------------------------------------------------------------------
# held-out test split, subsampling


def _hold_out(
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


def _subsample_indices(n: int, limit: int | None, seed: int, stream: int) -> torch.Tensor | None:
    """Sorted indices of a seeded random ``limit`` of ``n`` rows, or None to keep all."""
    if limit is None or limit >= n:
        return None
    rng = np.random.default_rng([seed, stream])
    return torch.from_numpy(np.sort(rng.permutation(n)[:limit]))


def _subsample(
    ds: Dataset, labels: torch.Tensor, limit: int | None, seed: int, stream: int
) -> tuple[Dataset, torch.Tensor]:
    keep = _subsample_indices(len(labels), limit, seed, stream)
    if keep is None:
        return ds, labels
    return ds.select(keep.tolist()), labels[keep]


# --------------------------------------------------------------------------------------
# image properties


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


def _native_size(image: Any) -> tuple[int, int]:
    """(H, W) of a PIL image or H x W [x C] array."""
    if hasattr(image, "size") and not isinstance(image, np.ndarray):
        width, height = image.size
        return (int(height), int(width))
    array = np.asarray(image)
    return (int(array.shape[0]), int(array.shape[1]))
