"""Checks of a run config that need the libraries it names: timm knows the model, the
method's parameters build a compressor, torch knows the device.

The config dataclasses stay plain data; :func:`fedadc.config.to_run_config` (so every
``compose``) calls :func:`validate`, so a bad choice fails before any data, model or
training, naming the key and the valid choices. Building the run later applies the same
checks again through the constructors themselves (``create_vit``, ``create_compressor``).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping

import torch

from fedadc.compression.registry import compressor_params, create_compressor, list_compressors
from fedadc.config.schema import RunConfig
from fedadc.model.factory import check_model_name
from fedadc.model.spec import TokenSpec

_PROBE = TokenSpec(num_tokens=5, dim=4, num_classes=2)
"""A tiny split to build a method on: its parameter checks do not depend on the sizes."""


def validate(run: RunConfig) -> None:
    """``ValueError`` naming the key (``device``, ``model.name``, ``method.*``) and the fix."""
    check_device(run.device)
    try:
        check_model_name(run.model.name)
    except ValueError as err:
        raise ValueError(f"model.name: {err}") from None
    check_method(run.method.name, run.method.params)
    if not run.model.head_trainable:
        if run.federation.shape == "u":
            raise ValueError(
                "model.head_trainable=false cannot be used with federation.shape=u: the "
                "client's end trains on the server's outputs every step, so nothing can be "
                "streamed; use federation.shape=standard, or model.head_trainable=true"
            )
        check_frozen_head(run.method.name, run.method.params)


def check_device(device: str) -> None:
    try:
        torch.device(device)
    except (RuntimeError, ValueError):
        raise ValueError(
            f"device must be a torch device such as 'cpu', 'cuda' or 'cuda:0', got {device!r}"
        ) from None


def check_method(name: str, params: Mapping[str, object]) -> None:
    """The method is registered and builds with ``params``, else an error naming the key."""
    if name not in list_compressors():
        raise ValueError(f"method.name must be one of {list_compressors()}, got {name!r}")
    valid = compressor_params(name)
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise ValueError(
            f"unknown method.params {unknown} for method {name!r}; valid: {sorted(valid)}"
        )
    required = (k for k, v in valid.items() if v is inspect.Parameter.empty)
    missing = sorted(k for k in required if k not in params)
    if missing:
        raise ValueError(
            f"method {name!r} needs method.params {missing} (e.g. set xi=0.1); "
            f"valid params: {sorted(valid)}"
        )
    try:
        create_compressor(name, _PROBE, **params)
    except (ValueError, TypeError) as err:
        text = str(err)
        if any(text.startswith(k) for k in params):  # "ratio must be ..." names its key
            raise ValueError(f"method.params.{text}") from None
        raise ValueError(f"method.params of {name!r}: {text}") from None


def check_frozen_head(name: str, params: Mapping[str, object]) -> None:
    """A frozen head sends no gradient back, so nothing on the client can learn: a method
    with trainable client-side parameters (BottleNet++'s encoder) would stay at its random
    initialisation. Refused rather than silently frozen."""
    encoder = create_compressor(name, _PROBE, **params).encoder
    if any(p.requires_grad for p in encoder.parameters()):
        raise ValueError(
            f"model.head_trainable=false cannot be used with method {name!r}: its client-side "
            "encoder has trainable parameters, which need the gradient a frozen head does not "
            "receive; use model.head_trainable=true, or a method without client-side "
            "parameters (adc, topk, randtopk, c3sl, quantization, identity)"
        )
