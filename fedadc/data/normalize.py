"""Pixel normalisation: which per-channel mean/std a run uses, and computing them.

``data.normalize`` (the config key) picks them:

- ``auto`` (default): ``model`` for a pretrained model or checkpoint (it keeps the
  statistics it was trained with), else ``dataset``. The embedded digits keep their own
  training statistics under ``auto`` whatever the model.
- ``dataset``: per-channel statistics of the training split, after the resize and before
  augmentation, over a seeded sample of at most :data:`STATS_IMAGES` images (so large sets
  stay fast). Sums are exact integers over uint8 pixels, so every process of a run (server,
  each client) computes bit-identical values from the same split and seed.
- ``model``: the timm model's ``pretrained_cfg`` mean/std (ImageNet's when timm has none).
- ``none``: pixels in [0, 1], not standardised.

``data.mean`` / ``data.std`` (both, one value per channel) override all of these.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

log = logging.getLogger("fedadc")

NORMALIZE_KINDS = ("auto", "dataset", "model", "none")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
STATS_IMAGES = 1024
"""``dataset`` statistics come from at most this many training images (seeded sample):
the per-channel mean is then within ~1 % of a std of the full split's, and a client
process that reloads the data pays well under a second on small images."""
STATS_STREAM = 2
"""Seed stream of the statistics sample (0 and 1 are the max_*_samples subsets)."""
_MIN_STD = 1e-6


@dataclass(frozen=True)
class Normalization:
    """The per-channel (x - mean) / std a run applies to pixels in [0, 1], and where
    it came from (``kind``: dataset, model, explicit, none, digits)."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    kind: str
    images: int = 0
    """How many training images the ``dataset`` statistics were computed from."""

    def record(self) -> dict[str, Any]:
        """What a run records (summary.json ``data.normalization``) and logs."""
        out: dict[str, Any] = {"kind": self.kind, "mean": list(self.mean), "std": list(self.std)}
        if self.images:
            out["images"] = self.images
        return out

    def channels(self, in_chans: int) -> Normalization:
        """These statistics for ``in_chans`` channels: explicit ones must match (an error
        naming ``data.mean``), a model's RGB statistics are averaged for a gray model."""
        if len(self.mean) == in_chans:
            return self
        if self.kind == "model" and in_chans == 1:
            mean, std = (sum(v) / len(v) for v in (self.mean, self.std))
            return Normalization((mean,), (std,), self.kind)
        if self.kind == "none":
            return none(in_chans)
        names = {1: "1 (grayscale)", 3: "3 (RGB)"}
        raise ValueError(
            f"data.mean/data.std have {len(self.mean)} value(s) but the images have "
            f"{names.get(in_chans, in_chans)} channel(s): give one value per channel "
            f"(e.g. data.mean=[{','.join(['0.5'] * in_chans)}] "
            f"data.std=[{','.join(['0.25'] * in_chans)}]), or set model.kwargs.in_chans"
        )


def none(in_chans: int) -> Normalization:
    return Normalization((0.0,) * in_chans, (1.0,) * in_chans, "none")


def check_normalize(
    normalize: str, mean: Sequence[float] | None, std: Sequence[float] | None
) -> None:
    """The config's ``data.normalize``/``data.mean``/``data.std`` are consistent
    (channel counts are checked against the images when they are loaded)."""
    if normalize not in NORMALIZE_KINDS:
        raise ValueError(
            f"data.normalize must be one of {list(NORMALIZE_KINDS)}, got {normalize!r}"
        )
    if mean is None and std is None:
        return
    if mean is None or std is None:
        given, missing = ("data.mean", "data.std") if std is None else ("data.std", "data.mean")
        raise ValueError(
            f"{given} is set but {missing} is not: give both, one value per channel "
            "(e.g. data.mean=[0.5] data.std=[0.25]), or neither (data.normalize picks them)"
        )
    if normalize != "auto":
        raise ValueError(
            f"data.mean/data.std give the statistics explicitly, so data.normalize={normalize} "
            "has nothing to choose: leave data.normalize=auto, or drop data.mean/data.std"
        )
    if len(mean) != len(std) or len(mean) not in (1, 3):
        raise ValueError(
            f"data.mean and data.std need one value per channel (1 for grayscale, 3 for RGB), "
            f"got {len(mean)} and {len(std)} values"
        )
    if not all(math.isfinite(float(v)) for v in (*mean, *std)):
        raise ValueError(f"data.mean/data.std must be finite numbers, got {mean} / {std}")
    if any(float(s) <= 0 for s in std):
        raise ValueError(
            f"data.std values must be > 0 (they divide the pixels), got {list(std)}: "
            "use pixel units in [0, 1], e.g. data.std=[0.25]"
        )


def explicit(mean: Sequence[float], std: Sequence[float]) -> Normalization:
    check_normalize("auto", mean, std)
    return Normalization(tuple(float(v) for v in mean), tuple(float(v) for v in std), "explicit")


def model_statistics(model_name: str) -> Normalization:
    """The mean/std a timm model was pretrained with (its ``pretrained_cfg``), ImageNet's
    when timm has no config for it (e.g. a custom name)."""
    import timm

    cfg = timm.get_pretrained_cfg(model_name)
    mean = getattr(cfg, "mean", None) if cfg is not None else None
    std = getattr(cfg, "std", None) if cfg is not None else None
    if not mean or not std:
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    return Normalization(tuple(float(v) for v in mean), tuple(float(v) for v in std), "model")


def pixel_statistics(images: Iterable[Any], in_chans: int) -> Normalization:
    """Per-channel mean/std of 8-bit images (PIL or H x W [x C] uint8 arrays) in [0, 1]
    units, from exact integer sums: the same images give the same floats in any process."""
    total = np.zeros(in_chans, dtype=np.int64)
    squares = np.zeros(in_chans, dtype=np.int64)
    pixels = count = 0
    for image in images:
        array = np.asarray(image)
        if array.dtype != np.uint8:
            raise TypeError(f"pixel statistics need 8-bit images, got {array.dtype}")
        flat = array.reshape(-1, in_chans).astype(np.int64)
        total += flat.sum(axis=0)
        squares += (flat * flat).sum(axis=0)
        pixels += flat.shape[0]
        count += 1
    if count == 0:
        raise ValueError("pixel statistics need at least one image")
    mean = [t / pixels / 255.0 for t in total.tolist()]
    # Var = E[x^2] - E[x]^2 from exact integer sums: no rounding accumulates.
    sums = zip(squares.tolist(), total.tolist(), strict=True)
    var = [(s * pixels - t * t) / pixels**2 / 255.0**2 for s, t in sums]
    std = [math.sqrt(max(v, 0.0)) for v in var]
    if any(s < _MIN_STD for s in std):
        log.warning("a channel of the training images is constant (std 0): its std is set to 1")
        std = [s if s >= _MIN_STD else 1.0 for s in std]
    return Normalization(tuple(mean), tuple(std), "dataset", images=count)
