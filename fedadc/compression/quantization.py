"""Uniform min-max quantization of the split activations and of the returning gradient.

Each tensor gets one global ``[min, max]`` and ``2**bits`` evenly spaced levels; the codes
travel bit-packed (exactly ``ceil(N * bits / 8)`` bytes) with the two float32 bounds. This is
the standard post-hoc quantization baseline of split-learning compression studies (the ADC
paper's "quantization" baseline). The client sends the tokens through a straight-through
estimator: the server's gradient w.r.t. the dequantized activations, itself quantized with
its own bounds, is taken as the gradient w.r.t. the tokens. :func:`quantize_ste` is the
same exchange as a single autograd function.
"""

from __future__ import annotations

import numpy as np
import torch

from fedadc.compression.base import Compressor, Encoded, Plan
from fedadc.compression.registry import register_compressor
from fedadc.model.spec import TokenSpec
from fedadc.wire.payload import Kind, Payload, PayloadError

MIN_BITS = 1
MAX_BITS = 16


def check_bits(bits: int) -> int:
    if isinstance(bits, bool) or not isinstance(bits, int):
        raise ValueError(f"bits must be an integer in [{MIN_BITS}, {MAX_BITS}], got {bits!r}")
    if not MIN_BITS <= bits <= MAX_BITS:
        raise ValueError(f"bits must be in [{MIN_BITS}, {MAX_BITS}], got {bits}")
    return bits


def quantize(x: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes (int64, shape of ``x``, in ``[0, 2**bits - 1]``) and float32 ``[min, max]``.

    ``codes = round((x - min) / (max - min) * (2**bits - 1))``; all zeros if ``max == min``.
    """
    check_bits(bits)
    x = x.detach().float()
    if x.numel() == 0:
        return torch.zeros_like(x, dtype=torch.int64), torch.zeros(2, device=x.device)
    lo, hi = x.min(), x.max()
    span = hi - lo
    if not bool(torch.isfinite(span)):
        raise ValueError("cannot quantize a tensor with NaN or Inf values (or an Inf range)")
    levels = 2**bits - 1
    if bool(span > 0):
        codes = torch.round((x - lo) / span * levels).clamp_(0, levels).to(torch.int64)
    else:
        codes = torch.zeros_like(x, dtype=torch.int64)
    return codes, torch.stack([lo, hi])


def dequantize(codes: torch.Tensor, scales: torch.Tensor, bits: int) -> torch.Tensor:
    """``min + codes * (max - min) / (2**bits - 1)`` as float32."""
    check_bits(bits)
    scales = scales.float().to(codes.device)
    lo, hi = scales[0], scales[1]
    step = (hi - lo) / (2**bits - 1)
    return lo + codes.float() * step


def quantize_dequantize(x: torch.Tensor, bits: int) -> torch.Tensor:
    """What the receiver reconstructs from ``x`` sent with ``bits`` bits per entry."""
    codes, scales = quantize(x, bits)
    return dequantize(codes, scales, bits)


def packed_size(count: int, bits: int) -> int:
    """Bytes of ``count`` codes of ``bits`` bits, bit-packed: ``ceil(count * bits / 8)``."""
    return -(-count * bits // 8)


def pack_codes(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Bit-pack codes (any shape, values in ``[0, 2**bits)``) MSB first into a uint8 vector."""
    check_bits(bits)
    flat = codes.detach().cpu().numpy().astype(np.int64, copy=False).ravel()
    if flat.size and (flat.min() < 0 or flat.max() >= 2**bits):
        raise ValueError(f"codes must lie in [0, {2**bits - 1}] for bits={bits}")
    if bits == 8:
        packed = flat.astype(np.uint8)
    elif bits == 16:
        packed = flat.astype(">u2").view(np.uint8)
    else:
        shifts = np.arange(bits - 1, -1, -1, dtype=np.int64)
        planes = ((flat[:, None] >> shifts) & 1).astype(np.uint8)
        packed = np.packbits(planes.ravel())
    return torch.from_numpy(np.ascontiguousarray(packed))


def unpack_codes(packed: torch.Tensor, count: int, bits: int) -> torch.Tensor:
    """Inverse of :func:`pack_codes`: ``count`` int64 codes from a uint8 vector."""
    check_bits(bits)
    data = packed.detach().cpu().numpy()
    expected = packed_size(count, bits)
    if data.dtype != np.uint8 or data.ndim != 1 or data.size != expected:
        raise ValueError(
            f"{count} codes of {bits} bits need a uint8 vector of {expected} bytes, "
            f"got {data.dtype} of shape {data.shape}"
        )
    if bits == 8:
        codes = data.astype(np.int64)
    elif bits == 16:
        codes = data.view(">u2").astype(np.int64)
    else:
        planes = np.unpackbits(data, count=count * bits).reshape(count, bits)
        codes = np.zeros(count, dtype=np.int64)
        for plane in range(bits):
            codes |= planes[:, plane].astype(np.int64) << (bits - 1 - plane)
    return torch.from_numpy(codes)


class _QuantizeSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor, bits: int):
        ctx.bits = bits  # type: ignore[attr-defined]
        return quantize_dequantize(x, bits).to(x.dtype)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor):
        bits = ctx.bits  # type: ignore[attr-defined]
        return quantize_dequantize(grad, bits).to(grad.dtype), None


def quantize_ste(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Quantize-dequantize ``x`` forward and the incoming gradient backward (each with its
    own min/max): the one-graph equivalent of the split exchange of :class:`UniformQuantization`.
    """
    check_bits(bits)
    return _QuantizeSTE.apply(x, bits)


@register_compressor("quantization")
class UniformQuantization(Compressor):
    """``bits``-bit min-max quantization of activations and gradients, bit-packed."""

    ratio_params = {"bits": "b"}  # noqa: RUF012

    def __init__(self, spec: TokenSpec, bits: int) -> None:
        super().__init__(spec)
        self.bits = check_bits(bits)

    def nominal_xi(self, batch_size: int) -> float:
        return self.bits / 32

    # ---------------------------------------------------------------- client side
    def encode(self, tokens: torch.Tensor, labels: torch.Tensor, plan: Plan) -> Encoded:
        self.check_batch(tokens, labels)
        payload = self._pack(tokens, "activations", "scales", Kind.ACTIVATIONS)
        payload.add("labels", labels, Kind.LABELS)
        return Encoded(payload=payload, sent=tokens)

    def decode_gradient(self, payload: Payload) -> torch.Tensor:
        return self._unpack(payload, "gradients", "gradient_scales")

    # ---------------------------------------------------------------- server side
    def expected_tensors(self) -> dict[str, str]:
        return {"activations": "uint8", "scales": "float", "labels": "label"}

    def received_leaf(self, payload: Payload) -> torch.Tensor:
        return self._unpack(payload, "activations", "scales")

    def encode_gradient(self, grad: torch.Tensor, payload: Payload) -> Payload:
        return self._pack(grad, "gradients", "gradient_scales", Kind.GRADIENTS)

    # ---------------------------------------------------------------- wire
    def _pack(self, x: torch.Tensor, name: str, scales_name: str, kind: Kind) -> Payload:
        codes, scales = quantize(x, self.bits)
        payload = Payload().add(name, pack_codes(codes, self.bits), kind)
        payload.add(scales_name, scales, Kind.SCALES)
        payload.batch_size = int(x.shape[0])
        return payload

    def _unpack(self, payload: Payload, name: str, scales_name: str) -> torch.Tensor:
        batch = payload.batch_size
        if batch is None:
            raise PayloadError("quantization payload needs its batch_size")
        scales = payload[scales_name]
        if tuple(scales.shape) != (2,) or not bool(torch.isfinite(scales).all()):
            raise PayloadError(f"quantization payload {scales_name!r} must be 2 finite floats")
        shape = (batch, self.spec.num_tokens, self.spec.dim)
        try:
            codes = unpack_codes(payload[name], batch * self.spec.sample_features, self.bits)
        except ValueError as err:
            raise PayloadError(f"quantization payload {name!r}: {err}") from None
        return dequantize(codes, scales, self.bits).view(shape)
