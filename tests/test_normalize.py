"""Pixel normalisation of the generic sources: the training split's statistics by default,
a pretrained model's own, explicit ``data.mean``/``data.std``; recorded by the run."""

from __future__ import annotations

import dataclasses
import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fedadc.config import compose
from fedadc.config.schema import RunConfig
from fedadc.data import load_image_data, normalize
from fedadc.data.tensors import ImageData
from fedadc.federated.build import data_normalization, load_data
from fedadc.federated.reference import train_reference
from fedadc.federated.results import RunDirectory
from tests.data_factory import make_images, write_disk_dataset, write_imagefolder

TINY = [
    "federation.rounds=1",
    "federation.local_steps=2",
    "federation.num_clients=2",
    "federation.batch_size=8",
    "model.kwargs.embed_dim=16",
    "model.kwargs.depth=2",
    "model.split_at=1",
]


def _expected(grayscale: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean/std (pixels in [0, 1]) of the factory's training images, by numpy:
    the independent truth (the loaded train split is exactly these 60 images)."""
    images, _ = make_images(20, seed=0, grayscale=grayscale)
    pixels = np.stack([np.asarray(image, dtype=np.float64) / 255.0 for image in images])
    pixels = pixels.reshape(-1, 1 if grayscale else 3)
    return pixels.mean(axis=0), pixels.std(axis=0)


def _all_train(data: ImageData) -> torch.Tensor:
    images, _ = data.train.batch(torch.arange(len(data.train)))
    return images.double()


def _run(path: Path, source: str, *extra: str) -> RunConfig:
    data = {"imagefolder": "imagefolder", "disk": "local_disk"}[source]
    return compose([f"data={data}", f"data.path={path}", *TINY, *extra])


@pytest.mark.parametrize("grayscale", [False, True], ids=["rgb", "gray"])
@pytest.mark.parametrize("source", ["imagefolder", "disk"])
def test_default_standardises_with_training_statistics(
    tmp_path: Path, source: str, grayscale: bool
) -> None:
    writer = write_imagefolder if source == "imagefolder" else write_disk_dataset
    run = _run(writer(tmp_path, grayscale=grayscale), source)
    assert run.data.normalize == "auto" and run.data.mean is None
    data = load_data(run)
    channels = 1 if grayscale else 3
    assert data.image_shape == (channels, 12, 12)
    norm = data.normalization
    assert norm is not None and norm.kind == "dataset" and norm.images == 60
    mean, std = _expected(grayscale)
    np.testing.assert_allclose(norm.mean, mean, rtol=0, atol=1e-12)
    np.testing.assert_allclose(norm.std, std, rtol=0, atol=1e-12)
    images = _all_train(data)
    per_channel = images.transpose(0, 1).reshape(channels, -1)
    zeros = torch.zeros(channels, dtype=torch.double)
    torch.testing.assert_close(per_channel.mean(1), zeros, atol=1e-5, rtol=0)
    torch.testing.assert_close(per_channel.std(1, correction=0), zeros + 1, atol=1e-5, rtol=0)
    # The test split uses the training statistics (not its own).
    test_images, _ = data.test.batch(torch.arange(len(data.test)))
    raw = np.stack([np.asarray(i, dtype=np.float64) / 255 for i in data.test.decode(range(15))])
    raw = raw.reshape(15, 12, 12, channels).transpose(0, 3, 1, 2)
    expected = (raw - mean.reshape(1, -1, 1, 1)) / std.reshape(1, -1, 1, 1)
    np.testing.assert_allclose(test_images.numpy(), expected, rtol=0, atol=1e-5)


def test_explicit_statistics_are_applied_exactly(tmp_path: Path) -> None:
    path = write_imagefolder(tmp_path)
    run = _run(path, "imagefolder", "data.mean=[0.25,0.5,0.75]", "data.std=[0.5,0.25,0.125]")
    data = load_data(run)
    assert data.normalization is not None
    assert data.normalization.record() == {
        "kind": "explicit",
        "mean": [0.25, 0.5, 0.75],
        "std": [0.5, 0.25, 0.125],
    }
    images, _ = data.train.batch(torch.arange(6))
    raw = torch.stack(
        [torch.from_numpy(np.array(i)).permute(2, 0, 1) for i in data.train.decode(range(6))]
    )
    mean = torch.tensor([0.25, 0.5, 0.75]).view(1, 3, 1, 1)
    std = torch.tensor([0.5, 0.25, 0.125]).view(1, 3, 1, 1)
    torch.testing.assert_close(images, (raw.float() / 255 - mean) / std, rtol=0, atol=1e-6)
    none = load_data(_run(path, "imagefolder", "data.normalize=none"))
    torch.testing.assert_close(none.train.batch(torch.arange(6))[0], raw.float() / 255)


def test_pretrained_models_keep_timm_statistics() -> None:
    import timm

    deit = compose(["model=deit_tiny", "data=cifar100"])
    assert data_normalization(deit, 3) == normalize.Normalization(
        (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "model"
    )
    # timm's augreg ViTs were trained with 0.5 / 0.5, not ImageNet's statistics.
    vit = compose(["model=vit_base", "data=cifar100"])
    cfg = timm.get_pretrained_cfg(vit.model.name)
    assert data_normalization(vit, 3).mean == tuple(cfg.mean) == (0.5, 0.5, 0.5)
    gray = data_normalization(deit, 1)
    assert isinstance(gray, normalize.Normalization) and len(gray.mean) == 1
    assert gray.mean[0] == pytest.approx(sum(deit_mean := (0.485, 0.456, 0.406)) / len(deit_mean))
    # The user overrides: the training split's statistics, or explicit values.
    assert (
        data_normalization(compose(["model=deit_tiny", "data.normalize=dataset"]), 3) == "dataset"
    )
    pinned = compose(["model=deit_tiny", "data.mean=[0.1,0.2,0.3]", "data.std=[1,1,1]"])
    assert data_normalization(pinned, 3) == normalize.explicit([0.1, 0.2, 0.3], [1, 1, 1])
    # An unknown model name falls back to ImageNet's.
    assert normalize.model_statistics("no_such_model").mean == normalize.IMAGENET_MEAN
    # The embedded digits keep their own statistics under auto, pretrained or not.
    assert data_normalization(compose(["model=deit_tiny", "data=digits"]), 3) == "dataset"


def test_digits_numbers_are_unchanged() -> None:
    """The default run's data: digits standardised with one training mean/std, as before."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_data(compose([]))
    bunch = load_digits()
    pixels = torch.from_numpy(bunch.images).float().div_(16.0)
    train_idx, _ = train_test_split(
        np.arange(len(bunch.target)), test_size=0.2, random_state=0, stratify=bunch.target
    )
    mean, std = pixels[train_idx].mean(), pixels[train_idx].std()
    images, _ = data.train.batch(torch.arange(len(data.train)))
    assert torch.equal(images[:, 0], (pixels[train_idx] - mean) / std)
    assert data.normalization is not None
    assert data.normalization.record() == {
        "kind": "dataset",
        "mean": [float(mean)],
        "std": [float(std)],
        "images": len(train_idx),
    }
    raw = load_data(compose(["data.normalize=none"]))
    assert torch.equal(raw.train.batch(torch.arange(len(raw.train)))[0][:, 0], pixels[train_idx])


def test_recorded_statistics_equal_the_computed_ones(tmp_path: Path) -> None:
    run = _run(write_disk_dataset(tmp_path, grayscale=True), "disk", f"results_dir={tmp_path}")
    results = RunDirectory.create(run)
    train_reference(run, results=results)
    summary = json.loads((results.path / "summary.json").read_text())
    recorded = summary["data"]["normalization"]
    mean, std = _expected(grayscale=True)
    assert recorded["kind"] == "dataset" and recorded["images"] == 60
    assert recorded["mean"] == list(load_data(run).normalization.mean)  # type: ignore[union-attr]
    np.testing.assert_allclose(recorded["mean"], mean, rtol=0, atol=1e-12)
    np.testing.assert_allclose(recorded["std"], std, rtol=0, atol=1e-12)
    assert summary["data"]["image_shape"] == [1, 12, 12]
    # Pinning the recorded values reproduces the run's inputs exactly.
    pinned = dataclasses.replace(
        run, data=dataclasses.replace(run.data, mean=recorded["mean"], std=recorded["std"])
    )
    idx = torch.arange(8)
    assert torch.equal(load_data(pinned).train.batch(idx)[0], load_data(run).train.batch(idx)[0])


def test_every_process_computes_the_same_statistics(tmp_path: Path) -> None:
    """A fresh process (a Flower ClientApp) gets bit-identical statistics."""
    run = _run(write_imagefolder(tmp_path), "imagefolder")
    here = load_data(run).normalization
    assert here is not None
    code = (
        "import json, pickle, sys; from fedadc.federated.build import load_data; "
        "print(json.dumps(load_data(pickle.load(sys.stdin.buffer)).normalization.record()))"
    )
    other = subprocess.run(
        [sys.executable, "-c", code],
        input=pickle.dumps(run),
        cwd=Path(__file__).parents[1],
        capture_output=True,
        timeout=120,
    )
    assert other.returncode == 0, other.stderr.decode()[-3000:]
    assert json.loads(other.stdout.decode().splitlines()[-1]) == here.record()


def test_statistics_sample_is_bounded_and_seeded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(normalize, "STATS_IMAGES", 10)
    monkeypatch.setattr("fedadc.data.sources.STATS_IMAGES", 10)
    path = str(write_disk_dataset(tmp_path))

    def stats(seed: int) -> normalize.Normalization:
        data = load_image_data("disk", path=path, seed=seed, cache_dir=tmp_path / "hf")
        assert data.normalization is not None
        return data.normalization

    first = stats(0)
    assert first.images == 10 and stats(0) == first
    assert stats(1) != first  # another seed draws another sample


def test_native_size_of_large_images_is_capped_for_from_scratch_models(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for split, count in (("train", 6), ("test", 2)):
        for label in ("a", "b"):
            folder = tmp_path / "big" / split / label
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    path = tmp_path / "big"
    # vit_micro has 2-pixel patches: at most 16 patches (32 px) on the longer side.
    assert load_data(_run(path, "imagefolder")).image_shape == (3, 24, 32)
    assert load_data(_run(path, "imagefolder", "data.img_size=48")).image_shape == (3, 48, 48)
    wide = _run(path, "imagefolder", "model.kwargs.patch_size=8")
    assert load_data(wide).image_shape == (3, 96, 128)  # 16 x 12 patches: under the cap


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["data.mean=[0.5]"], r"data\.mean is set but data\.std is not"),
        (["data.std=[0.5]"], r"data\.std is set but data\.mean is not"),
        (["data.mean=[0.5]", "data.std=[0]"], r"data\.std values must be > 0"),
        (["data.mean=[0.5,0.5]", "data.std=[1,1]"], r"one value per channel"),
        (["data.mean=[0.5]", "data.std=[1,1]"], r"one value per channel"),
        (["data.normalize=imagenet"], r"data\.normalize must be one of \['auto', 'dataset'"),
        (
            ["data.normalize=dataset", "data.mean=[0.5]", "data.std=[1]"],
            r"leave data\.normalize=auto",
        ),
    ],
)
def test_bad_normalisation_keys_name_the_key_and_the_fix(
    overrides: list[str], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        compose(overrides)


def test_channel_count_mismatch_is_a_clear_error(tmp_path: Path) -> None:
    run = _run(write_imagefolder(tmp_path), "imagefolder", "data.mean=[0.5]", "data.std=[0.25]")
    message = r"data\.mean/data\.std have 1 value\(s\) but the images have 3 \(RGB\)"
    with pytest.raises(ValueError, match=message):
        load_data(run)
