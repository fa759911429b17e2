"""Image transforms: PIL image -> normalised C x H x W float32 tensor (torchvision v2).

Normalisation is the run's per-channel mean/std (:mod:`fedadc.data.normalize` picks them:
the training split's statistics by default, a pretrained model's own); the statistics are
computed on :func:`resize_steps` (the eval pipeline before ``ToTensor``).

Kinds (``data.augment``):

- ``paper``: the ADC paper's training pipeline (notes §3), in its order: RandAugment(2, 9),
  ColorJitter(0.4, 0.4, 0.4, hue 0), Resize to exactly ``img_size`` (aspect ratio not kept),
  RandomHorizontalFlip, ToTensor, Normalize. Its eval pipeline is Resize + ToTensor +
  Normalize (no crop).
- ``light``: for small images (digits, characters): Resize if needed + RandomCrop with
  ``size // 8`` zero padding. No flip: digits and characters are not flip invariant.
- ``none``: Resize + ToTensor + Normalize, also when training.
- ``auto``: ``paper`` from 128 pixels up (the paper's regime), else ``light``.

Every transform draws its randomness from torch's default CPU generator (torchvision v2's
RandAugment, ColorJitter, RandomCrop and RandomHorizontalFlip all do), so
:func:`apply_seeded` makes a batch's augmentation a pure function of its seed, in any process.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import v2

from fedadc.data.normalize import Normalization

AUGMENT_KINDS = ("auto", "paper", "light", "none")
PAPER_MIN_SIZE = 128
"""``auto`` uses the paper's pipeline from this many pixels (shorter side) up."""

Transform = Callable[[Any], torch.Tensor]


def resolve_augment(kind: str, img_size: tuple[int, int]) -> str:
    """``auto`` -> ``paper`` when min(img_size) >= 128 (RandAugment is meant for natural
    images of ImageNet-like size), else ``light``; other kinds are returned unchanged."""
    if kind not in AUGMENT_KINDS:
        raise ValueError(f"augment must be one of {list(AUGMENT_KINDS)}, got {kind!r}")
    if kind != "auto":
        return kind
    return "paper" if min(img_size) >= PAPER_MIN_SIZE else "light"


def check_channels(in_chans: int) -> None:
    if in_chans not in (1, 3):
        raise ValueError(f"in_chans must be 1 (grayscale) or 3 (RGB), got {in_chans}")


class ToMode:
    """Convert any input image to PIL in ``mode`` ("RGB" or "L"), so grayscale data works
    with RGB models and vice versa; numpy arrays and tensors (H x W [x C]) are accepted."""

    def __init__(self, mode: str) -> None:
        self.mode = mode

    def __call__(self, image: Any) -> Image.Image:
        if not isinstance(image, Image.Image):
            array = np.asarray(image)
            if array.ndim == 3 and array.shape[-1] == 1:
                array = array[..., 0]
            image = Image.fromarray(array)
        return image if image.mode == self.mode else image.convert(self.mode)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(mode={self.mode!r})"


def _to_normalised_tensor(normalization: Normalization | None) -> list[Any]:
    """ToTensor (uint8 -> float in [0, 1]) + Normalize (none: [0, 1] kept), a plain tensor."""
    steps: list[Any] = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True)]
    if normalization is not None and normalization.kind != "none":
        steps.append(v2.Normalize(mean=list(normalization.mean), std=list(normalization.std)))
    return [*steps, v2.ToPureTensor()]


def resize_steps(img_size: tuple[int, int], in_chans: int) -> v2.Compose:
    """PIL in the model's mode, resized to ``img_size``: what every pipeline starts from
    (before augmentation), so also what the ``dataset`` statistics are computed on."""
    check_channels(in_chans)
    return v2.Compose([ToMode("RGB" if in_chans == 3 else "L"), v2.Resize(list(img_size))])


def build_transforms(
    kind: str,
    img_size: tuple[int, int],
    in_chans: int,
    train: bool,
    normalization: Normalization | None = None,
) -> Transform:
    """The PIL -> tensor pipeline for ``kind`` (see the module docstring); ``train=False``
    gives the deterministic eval pipeline (resize + normalise) for every kind.
    ``normalization=None`` leaves pixels in [0, 1]."""
    check_channels(in_chans)
    if normalization is not None and len(normalization.mean) != in_chans:
        raise ValueError(
            f"normalization has {len(normalization.mean)} channel(s), the images {in_chans}"
        )
    height, width = (int(s) for s in img_size)
    if height < 1 or width < 1:
        raise ValueError(f"img_size must be positive, got {img_size}")
    size = [height, width]
    kind = resolve_augment(kind, (height, width))
    steps: list[Any] = [ToMode("RGB" if in_chans == 3 else "L")]
    if not train or kind == "none":
        steps.append(v2.Resize(size))
    elif kind == "paper":
        steps += [
            v2.RandAugment(num_ops=2, magnitude=9),
            v2.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.0),
            v2.Resize(size),
            v2.RandomHorizontalFlip(),
        ]
    else:  # light
        # No horizontal flip: digits and characters are not flip invariant (a flipped 2 or
        # "b" is not the same class). PIL's resize is a copy when the size already matches.
        padding = [max(1, width // 8), max(1, height // 8)]  # left/right, top/bottom
        steps += [v2.Resize(size), v2.RandomCrop(size, padding=padding)]
    return v2.Compose(steps + _to_normalised_tensor(normalization))


def build_tensor_augment(
    kind: str, img_size: tuple[int, int], normalization: Normalization
) -> Transform | None:
    """Training augmentation for images already normalised in memory (the embedded digits):
    ``light`` as for PIL images (RandomCrop with ``size // 8`` padding) with the padding
    filled by black as normalised (-mean / std per channel), so the border looks like the
    PIL pipeline's zero padding. ``none`` -> None. ``auto`` is ``none`` here, what these
    sources always got (so their runs keep their configs and names): on the 8x8 digits a
    1-pixel crop is 1/8 of the side and slowed the default run about 4x. ``paper``
    (RandAugment, ColorJitter) needs pixel images, not standardised tensors: refused."""
    height, width = (int(s) for s in img_size)
    kind = "none" if kind == "auto" else resolve_augment(kind, (height, width))
    if kind == "none":
        return None
    if kind == "paper":
        raise ValueError(
            "data.augment=paper (RandAugment, ColorJitter) needs pixel images; this source "
            "holds normalised tensors: set data.augment=light or data.augment=none"
        )
    fill = [-m / s for m, s in zip(normalization.mean, normalization.std, strict=True)]
    padding = [max(1, width // 8), max(1, height // 8)]
    return v2.RandomCrop([height, width], padding=padding, fill=fill[0] if len(fill) == 1 else fill)


def apply_seeded(transform: Transform, images: Sequence[Any], seed: int) -> torch.Tensor:
    """Apply ``transform`` to ``images`` in order and stack them (B x C x H x W), with all
    randomness drawn from a generator seeded by ``seed``: the same seed and images give
    identical tensors in any process, and the caller's RNG streams are left untouched.

    Only torch's CPU generator is seeded (``torch.manual_seed`` would also queue a CUDA
    reseed that outlives the fork); python's ``random`` is seeded and restored as well,
    although torchvision v2's transforms draw only from torch.
    """
    if not images:
        raise ValueError("apply_seeded needs at least one image")
    python_state = random.getstate()
    try:
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(int(seed))
            random.seed(int(seed))
            tensors = [transform(image) for image in images]
    finally:
        random.setstate(python_state)
    return torch.stack(tensors)
