"""Shared by the fault tests: a small in-process run, the methods they cover, and
helpers that spoil a payload in one named way (test_payload_validation.py, test_faults.py,
test_resume.py)."""

from __future__ import annotations

import dataclasses
import json
import struct
from collections.abc import Callable

import numpy as np
import safetensors.numpy
import torch

from fedadc.config.schema import DataConfig, MethodConfig, RunConfig
from fedadc.wire import Payload, WireFormat
from fedadc.wire.payload import Kind
from tests.test_federated import make_run

HOSTILE = 1
"""The partition that misbehaves."""


def small_run(method: str = "identity", params: dict | None = None, **federation) -> RunConfig:
    fed = {"num_clients": 3, "rounds": 1, "local_steps": 2, "batch_size": 8, **federation}
    return dataclasses.replace(
        make_run(**fed),
        method=MethodConfig(method, params or {}),
        data=DataConfig(max_test_samples=64),
    )


METHODS = {
    "identity": {},
    "adc": {"xi": 0.25},
    "quantization": {"bits": 4},
    "topk": {"ratio": 0.1},
    "c3sl": {"group_size": 2},
    "bottlenet": {"ratio": 0.25},
}


def edit(
    data: bytes, drop: tuple[str, ...] = (), batch_size: int | None = None, **tensors
) -> bytes:
    payload = Payload.from_bytes(data)
    for name in drop:
        del payload.tensors[name], payload.kinds[name]
    for name, tensor in tensors.items():
        payload.tensors[name] = tensor
        payload.kinds.setdefault(name, Kind.ACTIVATIONS)
    if batch_size is not None:
        payload.batch_size = batch_size
    return payload.to_bytes()


def as_int8(
    data: bytes, spoil: Callable[[dict[str, np.ndarray], dict], None] | None = None
) -> bytes:
    """``data`` re-encoded with int8 activations (``activations`` + its per-row scale
    ``activations.scale``), then ``spoil(arrays, header)`` applied to the raw safetensors
    entries and the fedadc header (kinds, dtypes, precision, meta) before writing it again."""
    payload = Payload.from_bytes(data)
    raw = payload.to_bytes(WireFormat(activation_dtype="int8"))
    if spoil is None:
        return raw
    (length,) = struct.unpack("<Q", raw[:8])
    header = json.loads(json.loads(raw[8 : 8 + length])["__metadata__"]["fedadc"])
    arrays = dict(safetensors.numpy.load(raw))
    spoil(arrays, header)
    return safetensors.numpy.save(arrays, metadata={"fedadc": json.dumps(header, sort_keys=True)})


def acts(data: bytes) -> torch.Tensor:
    return Payload.from_bytes(data)["activations"].clone()


def labels(data: bytes) -> torch.Tensor:
    return Payload.from_bytes(data)["labels"].clone()


def with_value(t: torch.Tensor, value: float) -> torch.Tensor:
    t = t.clone()
    t.view(-1)[0] = value
    return t


SCALE = "activations.scale"


def _drop_scale(arrays: dict, header: dict) -> None:
    del arrays[SCALE], header["kinds"][SCALE]


def _with_nan(scale: np.ndarray) -> np.ndarray:
    scale = scale.copy()
    scale.flat[0] = np.nan
    return scale


INT8_PAYLOAD_CASES = [
    (
        "int8-missing-scale",
        "identity",
        lambda d: as_int8(d, _drop_scale),
        "int8 'activations' has no per-row scale tensor 'activations.scale'",
    ),
    (
        "int8-scale-per-sample",
        "identity",
        lambda d: as_int8(d, lambda a, h: a.update({SCALE: a[SCALE][:, 0]})),
        r"must be float32 of shape \(8, 17\) .* got float32 \(8,\)",
    ),
    (
        "int8-float16-scale",
        "identity",
        lambda d: as_int8(d, lambda a, h: a.update({SCALE: a[SCALE].astype(np.float16)})),
        r"must be float32 of shape \(8, 17\) .* got float16",
    ),
    (
        "int8-float-codes",
        "identity",
        lambda d: as_int8(
            d, lambda a, h: a.update({"activations": a["activations"].astype(np.float32)})
        ),
        "int8 'activations' must be stored as int8, got float32",
    ),
    (
        "int8-nan-scale",
        "adc",
        lambda d: as_int8(d, lambda a, h: a.update({SCALE: _with_nan(a[SCALE])})),
        "scale 'activations.scale' must be finite and >= 0",
    ),
    (
        "unknown-precision",
        "identity",
        lambda d: as_int8(d, lambda a, h: h["precision"].update(activations="int4")),
        "'activations' has precision 'int4'; valid: ",
    ),
]
"""Spoiled int8 payloads (test_payload_validation.py's case format: id, method, spoil,
what the error must say): the scale missing, misshapen, not float32 or not finite, the
codes not int8, an unknown precision."""
