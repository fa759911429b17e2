"""Payload precision: how float activations and gradients are written on the wire.

An option stacked on any method (``wire.activation_dtype``, ``wire.gradient_dtype``): the
encoder writes the float tensors of kind ``activations`` / ``gradients`` of a payload in
one of :data:`PAYLOAD_DTYPES` and the receiver decodes them back to float32, so training
code never sees wire dtypes (the same contract as the label dtypes).

* ``float32``: unchanged (the default; the bytes are exactly those of earlier versions).
* ``float16``: IEEE half, round to nearest even; relative error <= 2^-11 in its normal
  range (|x| in [6.1e-5, 65504]). Smaller values lose precision (subnormals), larger
  overflow to Inf, which the receiver rejects: gradients are the risky side.
* ``bfloat16``: float32's range with an 8-bit significand, relative error <= 2^-8. numpy
  has no bfloat16, so the safetensors entry holds its raw 16 bits as ``uint16``; the
  payload header's ``precision`` map says how to read them.
* ``int8``: symmetric per-row quantisation, a row being the last axis (one token of a
  ``B x n x d`` activation, one sample of top-k's ``B x k`` values): ``scale = max|x| /
  127``, ``q = round(x / scale)`` in [-127, 127], decoded as ``q * scale``, so
  ``|x - q scale| <= scale / 2``. The scale is float32, one per row, in a companion tensor
  ``<name>.scale`` tagged with the same kind, so the ledger (and realised xi) count it as
  activation / gradient bytes. float32 rather than float16 because gradient rows can be
  far below float16's normal range (6.1e-5), where a float16 scale would lose its
  precision or flush to zero and silence the whole row; it costs 4 bytes per row (d = 32:
  int8 is 36 bytes a row instead of 128; d = 192: 196 instead of 768).

Integer tensors (quantization's packed codes, top-k's indices) are never touched.

Gradient semantics (what a step with a lossy precision computes): the server's tail trains
on the *dequantised* activations ``Q_a(sent)``, and returns the gradient w.r.t. them,
written in the gradient precision ``Q_g``; the client applies it to the float32 tensor it
encoded, as if the quantiser were the identity (straight-through). In one autograd graph::

    tail(ST(sent)),  ST forward: Q_a(x),  ST backward: Q_g(grad)

``tests/test_payload_precision.py`` checks the split exchange against exactly that graph.
"""

from __future__ import annotations

import numpy as np
import torch

PAYLOAD_DTYPES = ("float32", "float16", "bfloat16", "int8")
"""Wire precisions for float activations and gradients (``wire.*_dtype``)."""

INT8_MAX = 127
SCALE_SUFFIX = ".scale"
_STORED = {"float16": np.dtype(np.float16), "bfloat16": np.dtype(np.uint16)}


class PrecisionError(ValueError):
    """A quantised tensor cannot be decoded (a missing scale, a wrong dtype or shape)."""


def scale_name(name: str) -> str:
    """Name of the per-row scale tensor that travels next to int8 tensor ``name``."""
    return name + SCALE_SUFFIX


def check_dtype(dtype: str, what: str = "payload dtype") -> None:
    if dtype not in PAYLOAD_DTYPES:
        raise ValueError(f"{what} must be one of {list(PAYLOAD_DTYPES)}, got {dtype!r}")


def encode(name: str, array: np.ndarray, dtype: str) -> dict[str, np.ndarray]:
    """The arrays that carry float ``array`` in ``dtype``: ``{name: values}`` and, for
    int8, ``{scale_name(name): per-row float32 scales}``."""
    check_dtype(dtype)
    x = np.ascontiguousarray(array, dtype=np.float32)
    if dtype == "float32":
        return {name: x}
    if dtype == "float16":
        return {name: x.astype(np.float16)}
    if dtype == "bfloat16":  # torch rounds to nearest even; numpy keeps the raw bits
        bits = torch.from_numpy(x).to(torch.bfloat16).view(torch.int16).numpy()
        return {name: bits.view(np.uint16)}
    if x.ndim == 0:
        raise ValueError(f"int8 precision quantises per row; {name!r} is a scalar")
    q, scale = quantise_int8(x)
    return {name: q, scale_name(name): scale}


def decode(name: str, arrays: dict[str, np.ndarray], dtype: str) -> np.ndarray:
    """float32 values of ``name`` written in ``dtype`` (consumes nothing; the caller drops
    the scale). Raises :class:`PrecisionError` naming what does not fit."""
    if dtype not in PAYLOAD_DTYPES:
        raise PrecisionError(
            f"{name!r} has precision {dtype!r}; valid: {list(PAYLOAD_DTYPES)} "
            "(sender and receiver probably run different versions)"
        )
    values = arrays[name]
    stored = np.dtype(np.int8) if dtype == "int8" else _STORED.get(dtype, np.dtype(np.float32))
    if values.dtype != stored:
        raise PrecisionError(f"{dtype} {name!r} must be stored as {stored}, got {values.dtype}")
    if dtype == "float32":
        return values
    if dtype == "float16":
        return values.astype(np.float32)
    if dtype == "bfloat16":
        bits = torch.from_numpy(np.ascontiguousarray(values).view(np.int16))
        return bits.view(torch.bfloat16).float().numpy()
    scale = arrays.get(scale_name(name))
    if scale is None:
        raise PrecisionError(
            f"int8 {name!r} has no per-row scale tensor {scale_name(name)!r}; an int8 "
            "tensor must travel with one float32 scale per row"
        )
    if values.ndim == 0 or scale.dtype != np.float32 or scale.shape != values.shape[:-1]:
        raise PrecisionError(
            f"scale {scale_name(name)!r} must be float32 of shape {values.shape[:-1]} (one "
            f"per row of int8 {name!r} {values.shape}), got {scale.dtype} {scale.shape}"
        )
    if not (np.isfinite(scale).all() and (scale >= 0).all()):
        raise PrecisionError(f"scale {scale_name(name)!r} must be finite and >= 0")
    return dequantise_int8(values, scale)


def quantise_int8(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-row int8 codes of float32 ``x`` and their float32 scales.

    A row that holds NaN or Inf gets a non-finite scale (and codes 0), which the receiver
    rejects, as it rejects a non-finite float32 payload.
    """
    amax = np.max(np.abs(x), axis=-1, initial=np.float32(0))
    scale = (amax / np.float32(INT8_MAX)).astype(np.float32)
    divisor = np.where(scale > 0, scale, np.float32(1))[..., None]
    with np.errstate(invalid="ignore", divide="ignore"):
        q = np.clip(np.rint(x / divisor), -INT8_MAX, INT8_MAX)
    q = np.where(np.isfinite(q), q, 0).astype(np.int8)
    return q, scale


def dequantise_int8(q: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return q.astype(np.float32) * scale[..., None]


def round_trip(tensor: torch.Tensor, dtype: str) -> torch.Tensor:
    """What the receiver decodes from ``tensor`` sent in ``dtype`` (float32, detached):
    ``Q_a`` / ``Q_g`` of the module docstring."""
    arrays = encode("x", tensor.detach().cpu().float().numpy(), dtype)
    return torch.from_numpy(np.array(decode("x", arrays, dtype))).to(tensor.device)
