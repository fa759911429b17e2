"""Shared by the fault tests: a small in-process run, the methods they cover, and
helpers that spoil a payload in one named way (test_payload_validation.py, test_faults.py,
test_resume.py)."""

from __future__ import annotations

import dataclasses

import torch

from fedadc.config.schema import DataConfig, MethodConfig, RunConfig
from fedadc.wire import Payload
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


def acts(data: bytes) -> torch.Tensor:
    return Payload.from_bytes(data)["activations"].clone()


def labels(data: bytes) -> torch.Tensor:
    return Payload.from_bytes(data)["labels"].clone()


def with_value(t: torch.Tensor, value: float) -> torch.Tensor:
    t = t.clone()
    t.view(-1)[0] = value
    return t
