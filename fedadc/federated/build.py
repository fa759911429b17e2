"""Build a run's pieces from its RunConfig, identically in every process.

Server, clients and the in-process reference each call these; seeding makes the models
and partitions the same everywhere, and a per-process cache avoids reloading data for
every message (it never changes a result: the same config always builds the same data).
"""

from __future__ import annotations

import logging
import re

import timm
import torch
from torch import nn

from fedadc.compression.base import Compressor
from fedadc.compression.registry import create_compressor
from fedadc.config.schema import RunConfig
from fedadc.config.validate import validate
from fedadc.data.normalize import Normalization, explicit, model_statistics
from fedadc.data.partition import partition_indices
from fedadc.data.tensors import ImageData, ImageSplit
from fedadc.model.split import SplitViT, split_vit
from fedadc.model.ushape import UShapeTail
from fedadc.wire.payload import Kind, Payload

log = logging.getLogger("fedadc")


def _from_scratch(run: RunConfig) -> bool:
    return not run.model.pretrained and run.model.checkpoint_path is None


def model_image_size(run: RunConfig) -> tuple[int, int] | None:
    """The image size the model needs, or None when a from-scratch model takes the data's."""
    if run.data.img_size is not None:
        return (run.data.img_size, run.data.img_size)
    size = run.model.kwargs.get("img_size")
    if size is not None:
        return (size, size) if isinstance(size, int) else tuple(size)  # type: ignore[return-value]
    if _from_scratch(run):
        return None
    cfg = timm.get_pretrained_cfg(run.model.name)
    return tuple(cfg.input_size[1:]) if cfg is not None else (224, 224)  # type: ignore[return-value]


MAX_NATIVE_TOKENS = 16
"""A from-scratch model without ``data.img_size`` takes the data's native size, capped at
this many patches along the longer side (256 tokens: 32 px for vit_micro's 2-pixel
patches), since attention cost grows with the square of the token count."""


def max_native_size(run: RunConfig) -> int | None:
    """The largest native side a from-scratch model takes by default (None: no cap)."""
    if not _from_scratch(run) or run.data.img_size is not None:
        return None
    patch = run.model.kwargs.get("patch_size")
    if patch is None:
        found = re.search(r"patch(\d+)", run.model.name)
        patch = int(found.group(1)) if found else 16
    patch = patch if isinstance(patch, int) else max(patch)
    return int(patch) * MAX_NATIVE_TOKENS


def data_normalization(run: RunConfig, in_chans: int | None) -> str | Normalization:
    """``data.normalize`` resolved against the model: explicit ``data.mean``/``data.std``
    win; ``auto`` is ``model`` for pretrained weights (not for the embedded digits, which
    keep their own statistics), else ``dataset``; ``model`` reads timm's pretrained_cfg."""
    d = run.data
    if d.mean is not None and d.std is not None:
        return explicit(d.mean, d.std)
    kind = d.normalize
    if kind == "auto":
        kind = "dataset" if _from_scratch(run) or d.source == "digits" else "model"
    if kind == "model":
        stats = model_statistics(run.model.name)
        return stats.channels(in_chans) if in_chans is not None else stats
    return kind


_DATA: dict[str, ImageData] = {}
_PARTS: dict[str, tuple[torch.Tensor, ...]] = {}


def _key(run: RunConfig) -> str:
    # RunConfig holds dicts (unhashable); its repr is a faithful, ordered key
    return repr((run.seed, run.data, run.model, run.partition, run.federation.num_clients))


def load_data(run: RunConfig) -> ImageData:
    """The run's train/test data (cached per process: clients handle many messages)."""
    key = _key(run)
    if key not in _DATA:
        _DATA[key] = _load_data(run)
    return _DATA[key]


def _load_data(run: RunConfig) -> ImageData:
    from fedadc.data.sources import load_image_data

    in_chans = run.model.kwargs.get("in_chans")
    if in_chans is None and not _from_scratch(run):
        in_chans = 3
    d = run.data
    return load_image_data(
        d.source,
        name=d.name,
        path=d.path,
        image_column=d.image_column,
        label_column=d.label_column,
        train_split=d.train_split,
        test_split=d.test_split,
        test_fraction=d.test_fraction,
        augment=d.augment,
        max_train_samples=d.max_train_samples,
        max_test_samples=d.max_test_samples,
        img_size=model_image_size(run),
        in_chans=in_chans,
        seed=run.seed,
        normalize=data_normalization(run, in_chans),
        max_native_size=max_native_size(run),
    )


def client_partitions(run: RunConfig) -> tuple[torch.Tensor, ...]:
    """Row indices of every client's partition (seeded, identical in every process)."""
    key = _key(run)
    if key not in _PARTS:
        _PARTS[key] = _client_partitions(run)
    return _PARTS[key]


def _client_partitions(run: RunConfig) -> tuple[torch.Tensor, ...]:
    data = load_data(run)
    if run.federation.num_clients == 1:
        return (torch.arange(len(data.train)),)
    p = run.partition
    return tuple(
        partition_indices(
            data.train.labels,
            run.federation.num_clients,
            kind=p.kind,
            seed=run.seed,
            alpha=p.alpha,
            min_partition_size=p.min_partition_size,
            classes_per_client=p.classes_per_client,
        )
    )


def client_data(run: RunConfig, partition: int) -> ImageSplit:
    parts = client_partitions(run)
    if not 0 <= partition < len(parts):
        raise ValueError(
            f"partition id {partition} is outside [0, {len(parts) - 1}]: the federation has "
            f"{len(parts)} clients (federation.num_clients), one per partition id"
        )
    return load_data(run).train.subset(parts[partition])


def build_split(run: RunConfig, data: ImageData) -> tuple[SplitViT, Compressor]:
    """Head, tail and compressor initialised from the run's seed. The run is validated
    first, so a config built by hand fails like a composed one, naming the key."""
    validate(run)
    torch.manual_seed(run.seed)
    kwargs = dict(run.model.kwargs)
    channels, height, width = data.image_shape
    kwargs.setdefault("img_size", (height, width))
    kwargs.setdefault("in_chans", channels)
    split = split_vit(
        run.model.name,
        run.model.split_at,
        num_classes=data.num_classes,
        pretrained=run.model.pretrained,
        checkpoint_path=run.model.checkpoint_path,
        **kwargs,
    )
    compressor = create_compressor(run.method.name, split.spec, **run.method.params)
    split.head.precision = split.tail.precision = run.precision
    tail: nn.Module = split.tail
    if run.federation.shape == "u":  # the client keeps the model's end
        tail = UShapeTail(split.tail, run.model.end_blocks)
    device = torch.device(run.device)
    return SplitViT(split.head.to(device), tail.to(device), split.spec), compressor.to(device)


def client_modules(split: SplitViT, compressor: Compressor) -> nn.ModuleDict:
    """What a client trains and uploads: the head and the compressor's client side, and in
    U-shape the model's end (:class:`~fedadc.model.ushape.UShapeTail`)."""
    modules = {"head": split.head, "encoder": compressor.encoder}
    if isinstance(split.tail, UShapeTail):
        modules["end"] = split.tail.end
    return nn.ModuleDict(modules)


def weights_payload(module: nn.Module) -> Payload:
    payload = Payload()
    for name, tensor in module.state_dict().items():
        payload.add(name, tensor, Kind.WEIGHTS)
    return payload


def load_weights(module: nn.Module, payload: Payload) -> None:
    state = {name: payload[name] for name in module.state_dict()}
    module.load_state_dict(state)
