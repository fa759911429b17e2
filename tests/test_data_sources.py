"""Loading image data from every local source, transforms and seeded augmentation."""

from __future__ import annotations

import collections
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import Value

from fedadc.data import HFImageSplit, HubUnavailableError, load_image_data
from fedadc.data.normalize import IMAGENET_MEAN, IMAGENET_STD, Normalization
from fedadc.data.tensors import ImageData, TensorSplit
from fedadc.data.transforms import apply_seeded, build_transforms, resolve_augment
from tests.data_factory import (
    CLASS_NAMES,
    TEST_PER_CLASS,
    TRAIN_PER_CLASS,
    expected_labels,
    make_images,
    visible_class,
    write_disk_dataset,
    write_imagefolder,
    write_parquet,
)

N_TRAIN = TRAIN_PER_CLASS * len(CLASS_NAMES)
N_TEST = TEST_PER_CLASS * len(CLASS_NAMES)
IMAGENET = Normalization(IMAGENET_MEAN, IMAGENET_STD, "explicit")
WRITERS = {"disk": write_disk_dataset, "imagefolder": write_imagefolder, "parquet": write_parquet}


def _load(
    tmp_path: Path,
    source: str,
    *,
    img_size: tuple[int, int] | None = (16, 16),
    in_chans: int | None = 3,
    seed: int = 0,
    **cfg: object,
) -> ImageData:
    if "path" not in cfg:
        cfg["path"] = str(WRITERS[source](tmp_path))
    return load_image_data(
        source,
        **cfg,
        img_size=img_size,
        in_chans=in_chans,
        seed=seed,
        cache_dir=tmp_path / "hf_cache",
    )


def _pixels(split: HFImageSplit) -> list[np.ndarray]:
    return [np.asarray(image) for image in split.decode(range(len(split)))]


def _assert_aligned(split: HFImageSplit) -> None:
    """Every row's image shows the class its label says (the factory's visible classes)."""
    images = split.decode(range(len(split)))
    assert [visible_class(image) for image in images] == split.labels.tolist()


@pytest.mark.parametrize("source", sorted(WRITERS))
def test_local_source_loads(tmp_path: Path, source: str) -> None:
    data = _load(tmp_path, source)
    assert data.num_classes == 3
    assert (len(data.train), len(data.test)) == (N_TRAIN, N_TEST)
    assert data.image_shape == (3, 16, 16)
    if source == "imagefolder":  # row order is the loader's: compare counts and pixels
        assert collections.Counter(data.train.labels.tolist()) == {0: 20, 1: 20, 2: 20}
    else:
        assert data.train.labels.tolist() == expected_labels(TRAIN_PER_CLASS)
        assert data.test.labels.tolist() == expected_labels(TEST_PER_CLASS)
    assert isinstance(data.train, HFImageSplit) and isinstance(data.test, HFImageSplit)
    _assert_aligned(data.train)
    _assert_aligned(data.test)
    assert data.train.class_names == list(CLASS_NAMES)
    images, labels = data.train.batch(torch.tensor([0, 5, 7]))
    assert images.shape == (3, 3, 16, 16) and images.dtype == torch.float32
    assert labels.dtype == torch.int64 and labels.tolist() == data.train.labels[[0, 5, 7]].tolist()


def test_native_size_and_channels_from_data(tmp_path: Path) -> None:
    rgb = _load(tmp_path, "disk", img_size=None, in_chans=None)
    assert rgb.image_shape == (3, 12, 12)
    gray = _load(
        tmp_path,
        "disk",
        img_size=None,
        in_chans=None,
        path=str(write_disk_dataset(tmp_path, grayscale=True)),
    )
    assert gray.image_shape == (1, 12, 12)
    assert gray.train.batch(torch.arange(4))[0].shape == (4, 1, 12, 12)


def test_grayscale_input_with_rgb_model_gives_equal_channels(tmp_path: Path) -> None:
    path = write_imagefolder(tmp_path, grayscale=True)
    data = _load(tmp_path, "imagefolder", path=str(path), in_chans=3, augment="none")
    images, _ = data.train.batch(torch.arange(6))
    assert images.shape == (6, 3, 16, 16)
    # Equal raw channels, then the recorded per-channel normalisation: undo it to compare.
    assert data.normalization is not None and len(data.normalization.mean) == 3
    mean = torch.tensor(data.normalization.mean).view(1, 3, 1, 1)
    std = torch.tensor(data.normalization.std).view(1, 3, 1, 1)
    raw = images * std + mean
    torch.testing.assert_close(raw[:, 0], raw[:, 1], atol=1e-5, rtol=0)
    torch.testing.assert_close(raw[:, 0], raw[:, 2], atol=1e-5, rtol=0)


@pytest.mark.parametrize("augment", ["light", "paper"])
def test_augmentation_is_seeded(tmp_path: Path, augment: str) -> None:
    data = _load(tmp_path, "parquet", augment=augment)
    idx = torch.arange(8)
    a, _ = data.train.batch(idx, augment_seed=7)
    b, _ = data.train.batch(idx, augment_seed=7)
    c, _ = data.train.batch(idx, augment_seed=8)
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    assert not torch.equal(a, c)
    e1, _ = data.train.batch(idx)
    e2, _ = data.train.batch(idx)
    torch.testing.assert_close(e1, e2, atol=0, rtol=0)
    assert not torch.equal(a, e1)
    # The test split never augments.
    t1, _ = data.test.batch(idx, augment_seed=7)
    torch.testing.assert_close(t1, data.test.batch(idx)[0], atol=0, rtol=0)


def test_seeded_augmentation_leaves_global_rng_alone() -> None:
    images, _ = make_images(2)
    transform = build_transforms("paper", (16, 16), 3, train=True, normalization=IMAGENET)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    apply_seeded(transform, images, seed=5)
    torch.testing.assert_close(torch.rand(3), expected, atol=0, rtol=0)


def test_missing_label_column_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"data\.label_column") as info:
        _load(tmp_path, "disk", label_column="fine_label")
    assert "['image', 'label']" in str(info.value)
    unlabelled = write_disk_dataset(tmp_path, label_column=None)
    with pytest.raises(ValueError, match=r"without labels") as info:
        _load(tmp_path, "disk", path=str(unlabelled))
    assert "['image']" in str(info.value) and "data.label_column" in str(info.value)


def test_custom_columns_and_string_labels(tmp_path: Path) -> None:
    path = write_disk_dataset(tmp_path, image_column="img", label_column="name", string_labels=True)
    data = _load(tmp_path, "disk", path=str(path), image_column="img", label_column="name")
    assert data.num_classes == 3 and data.train.class_names == list(CLASS_NAMES)
    assert data.train.labels.tolist() == expected_labels(TRAIN_PER_CLASS)
    _assert_aligned(data.test)


def test_hub_offline_fails_fast_with_local_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(HubUnavailableError) as info:
        load_image_data(
            "hub",
            name="no-such-org/no-such-dataset",
            img_size=None,
            in_chans=None,
            seed=0,
            cache_dir=tmp_path,
        )
    assert time.monotonic() - start < 5.0
    message = str(info.value)
    assert "no-such-org/no-such-dataset" in message and "could not be reached" in message
    assert "data.source=disk|imagefolder|parquet" in message and "data.path=" in message
    assert "save_to_disk" in message
    assert isinstance(info.value, RuntimeError) and info.value.__cause__ is not None


@pytest.mark.parametrize("source", ["disk", "parquet"])
def test_missing_test_split_holds_out_stratified(tmp_path: Path, source: str) -> None:
    path = WRITERS[source](tmp_path, with_test=False)
    data = _load(tmp_path, source, path=str(path), test_fraction=0.25, seed=3)
    assert (len(data.train), len(data.test)) == (45, 15)
    assert collections.Counter(data.test.labels.tolist()) == {0: 5, 1: 5, 2: 5}
    _assert_aligned(data.train)
    _assert_aligned(data.test)
    again = _load(tmp_path, source, path=str(path), test_fraction=0.25, seed=3)
    assert torch.equal(again.test.labels, data.test.labels)
    for one, two in zip(_pixels(again.test), _pixels(data.test), strict=True):
        assert np.array_equal(one, two)


def test_test_split_null_also_holds_out(tmp_path: Path) -> None:
    data = _load(tmp_path, "disk", test_split=None, test_fraction=0.5)
    assert (len(data.train), len(data.test)) == (30, 30)


def test_max_samples_subsample_seeded(tmp_path: Path) -> None:
    data = _load(tmp_path, "parquet", max_train_samples=10, max_test_samples=4, seed=1)
    assert (len(data.train), len(data.test)) == (10, 4)
    _assert_aligned(data.train)
    again = _load(tmp_path, "parquet", max_train_samples=10, max_test_samples=4, seed=1)
    assert torch.equal(again.train.labels, data.train.labels)


def test_subset_keeps_labels_aligned(tmp_path: Path) -> None:
    data = _load(tmp_path, "imagefolder")
    idx = torch.tensor([50, 3, 17, 3, 41])
    part = data.train.subset(idx)
    assert isinstance(part, HFImageSplit) and len(part) == 5
    assert part.labels.tolist() == data.train.labels[idx].tolist()
    _assert_aligned(part)
    torch.testing.assert_close(part.batch(torch.arange(5))[0], data.train.batch(idx)[0])
    nested = part.subset([4, 0])
    assert nested.labels.tolist() == data.train.labels[[41, 50]].tolist()
    _assert_aligned(nested)


def test_parquet_single_file(tmp_path: Path) -> None:
    path = write_parquet(tmp_path) / "train.parquet"
    data = _load(tmp_path, "parquet", path=str(path), test_fraction=0.5)
    assert (len(data.train), len(data.test)) == (30, 30)


def test_resolve_augment_rules() -> None:
    assert resolve_augment("auto", (224, 224)) == "paper"
    assert resolve_augment("auto", (128, 160)) == "paper"
    assert resolve_augment("auto", (127, 224)) == "light"
    assert resolve_augment("auto", (8, 8)) == "light"
    for kind in ("paper", "light", "none"):
        assert resolve_augment(kind, (8, 8)) == kind
    with pytest.raises(ValueError, match="augment"):
        resolve_augment("heavy", (8, 8))
    with pytest.raises(ValueError, match="in_chans"):
        build_transforms("none", (8, 8), 2, train=False)


def test_paper_pipeline_follows_the_notes() -> None:
    text = repr(build_transforms("paper", (32, 32), 3, train=True, normalization=IMAGENET))
    order = ["RandAugment", "ColorJitter", "Resize", "RandomHorizontalFlip", "ToImage", "Normalize"]
    positions = [text.index(step) for step in order]
    assert positions == sorted(positions)
    assert "num_ops=2, magnitude=9" in text
    assert "HorizontalFlip" not in repr(build_transforms("light", (32, 32), 1, train=True))
    assert "Random" not in repr(build_transforms("paper", (32, 32), 3, train=False))


def test_digits_resized_to_rgb_32() -> None:
    data = load_image_data("digits", img_size=(32, 32), in_chans=3, seed=0)
    assert data.image_shape == (3, 32, 32) and data.num_classes == 10
    assert isinstance(data.train, TensorSplit)
    images, labels = data.train.batch(torch.arange(4))
    assert images.shape == (4, 3, 32, 32) and labels.shape == (4,)
    torch.testing.assert_close(images[:, 0], images[:, 2])
    native = load_image_data("digits", img_size=None, in_chans=None, seed=0)
    assert native.image_shape == (1, 8, 8)
    assert len(native.train) == len(data.train) and torch.equal(
        native.train.labels, data.train.labels
    )


def _shifted(image: torch.Tensor, dy: int, dx: int, fill: float) -> torch.Tensor:
    """``image`` (C x H x W) moved by (dy, dx) pixels, uncovered pixels set to ``fill``."""
    out = torch.full_like(image, fill)
    h, w = image.shape[-2:]
    out[:, max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = image[
        :, max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
    ]
    return out


def test_digits_training_batches_are_shifted_by_at_most_one_pixel_with_black_borders() -> None:
    """The in-memory digits honour ``augment`` like the PIL sources: ``light`` is a random
    crop with 8 // 8 = 1 pixel of padding, filled with black as normalised."""
    data = load_image_data("digits", seed=0, augment="light")
    idx = torch.arange(32)
    plain, _ = data.train.batch(idx)
    a, labels = data.train.batch(idx, augment_seed=5)
    b, _ = data.train.batch(idx, augment_seed=5)
    c, _ = data.train.batch(idx, augment_seed=6)
    assert torch.equal(a, b) and not torch.equal(a, c) and not torch.equal(a, plain)
    assert torch.equal(labels, data.train.labels[idx])
    black = -data.normalization.mean[0] / data.normalization.std[0]
    shifts = collections.Counter()
    for original, augmented in zip(plain, a, strict=True):
        found = [
            (dy, dx)
            for dy in (-1, 0, 1)
            for dx in (-1, 0, 1)
            if torch.allclose(_shifted(original, dy, dx, black), augmented)
        ]
        assert found, "an augmented digit is not its original shifted by <= 1 pixel"
        shifts[found[0]] += 1
    assert len(shifts) > 1  # not the same shift for every image
    # evaluation (no seed) and the test split are never augmented
    torch.testing.assert_close(data.train.batch(idx)[0], plain)
    t, _ = data.test.batch(idx, augment_seed=5)
    assert torch.equal(t, data.test.batch(idx)[0])
    assert torch.equal(data.train.subset(idx).batch(torch.arange(32), augment_seed=5)[0], a)


@pytest.mark.parametrize("augment", ["none", "auto"])
def test_digits_auto_and_none_do_not_augment(augment: str) -> None:
    data = load_image_data("digits", seed=0, augment=augment)
    idx = torch.arange(8)
    assert torch.equal(data.train.batch(idx, augment_seed=5)[0], data.train.batch(idx)[0])


def test_digits_paper_is_refused_and_light_works_at_224() -> None:
    with pytest.raises(ValueError, match=r"data.augment=light or data.augment=none"):
        load_image_data("digits", seed=0, augment="paper")
    big = load_image_data(
        "digits", seed=0, img_size=(224, 224), max_train_samples=40, augment="light"
    )
    idx = torch.arange(8)
    shifted = big.train.batch(idx, augment_seed=1)[0]
    assert shifted.shape == (8, 1, 224, 224) and not torch.equal(shifted, big.train.batch(idx)[0])


def test_disk_single_dataset_is_train_and_holds_out(tmp_path: Path) -> None:
    # DatasetDict.save_to_disk writes each split as a Dataset folder of its own.
    path = write_disk_dataset(tmp_path) / "train"
    data = _load(tmp_path, "disk", path=str(path), test_fraction=0.2)
    assert (len(data.train), len(data.test)) == (48, 12)
    _assert_aligned(data.test)


def test_unlabelled_test_split_is_a_clear_error(tmp_path: Path) -> None:
    from datasets import DatasetDict, load_from_disk

    path = write_disk_dataset(tmp_path)
    splits = load_from_disk(str(path))
    test = splits["test"].cast_column("label", Value("int64"))
    test = test.map(lambda row: {"label": -1})
    DatasetDict({"train": splits["train"], "test": test}).save_to_disk(str(tmp_path / "neg"))
    with pytest.raises(ValueError, match=r"negative labels.*data\.test_split=null"):
        _load(tmp_path, "disk", path=str(tmp_path / "neg"))


@pytest.mark.parametrize(
    "source, message",
    [
        ("parquet", r"data\.path is required when data\.source=parquet"),
        ("hub", r"data\.name must name a Hugging Face dataset"),
        ("nope", r"data\.source must be one of \['digits', 'hub', 'disk'"),
    ],
)
def test_plain_arguments_are_checked_like_the_config(source: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_image_data(source)
