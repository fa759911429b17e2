"""Uniform quantization: bit packing, the error bound, wire format and bytes, and the
split-exchange gradient invariant through the straight-through estimator."""

from __future__ import annotations

import math

import pytest
import torch

from fedadc.compression.quantization import (
    UniformQuantization,
    dequantize,
    pack_codes,
    packed_size,
    quantize,
    quantize_dequantize,
    quantize_ste,
    unpack_codes,
)
from fedadc.wire.payload import bytes_by_kind
from tests.baseline_support import (
    N_FEATURES,
    SPEC,
    assert_grads_equal,
    assert_roundtrip_equal,
    identity_bytes,
    make_batch,
    one_graph,
    split_exchange,
    wire,
)


@pytest.mark.parametrize("bits", range(1, 17))
def test_pack_unpack_roundtrip(bits: int) -> None:
    gen = torch.Generator().manual_seed(bits)
    for count in (0, 1, 7, 37, 64):
        codes = torch.randint(0, 2**bits, (count,), generator=gen)
        packed = pack_codes(codes, bits)
        assert packed.dtype == torch.uint8
        assert packed.numel() == packed_size(count, bits) == math.ceil(count * bits / 8)
        assert torch.equal(unpack_codes(packed, count, bits), codes)


@pytest.mark.parametrize("bits", range(1, 17))
def test_quantize_error_bound(bits: int) -> None:
    x = torch.randn(4, 5, 8, generator=torch.Generator().manual_seed(bits)) * 3
    codes, scales = quantize(x, bits)
    assert codes.min() >= 0 and codes.max() <= 2**bits - 1
    lo, hi = float(x.min()), float(x.max())
    assert scales.tolist() == [lo, hi]
    err = (dequantize(codes, scales, bits) - x).abs().max()
    assert err <= (hi - lo) / (2**bits - 1) / 2 + 1e-5


def test_quantize_constant_is_exact() -> None:
    x = torch.full((3, 5, 8), -1.75)
    codes, scales = quantize(x, 4)
    assert (codes == 0).all()
    assert torch.equal(dequantize(codes, scales, 4), x)


@pytest.mark.parametrize("bits", [1, 3, 8, 16])
def test_quantization_wire_and_bytes(bits: int) -> None:
    comp = UniformQuantization(SPEC, bits=bits)
    batch = 6
    tokens, labels = make_batch(batch)
    enc = comp.encode(tokens, labels, {})
    assert enc.sent is tokens
    payload = enc.payload
    assert payload["activations"].dtype == torch.uint8
    assert payload["scales"].dtype == torch.float32 and payload["scales"].shape == (2,)
    total = len(payload.to_bytes())
    assert total < identity_bytes(batch)
    kinds = bytes_by_kind(payload.to_bytes())
    assert kinds["activations"] == math.ceil(batch * N_FEATURES * bits / 8)
    assert kinds["scales"] == 8
    assert_roundtrip_equal(payload)
    rec = comp.receive(wire(payload))
    torch.testing.assert_close(rec.server_input, quantize_dequantize(tokens, bits))
    grad_payload = comp.encode_gradient(torch.randn_like(rec.leaf), payload)
    assert bytes_by_kind(grad_payload.to_bytes())["gradients"] == kinds["activations"]
    assert comp.nominal_xi(batch) == bits / 32


@pytest.mark.parametrize("bits", [2, 8])
def test_quantization_split_gradient_matches_one_graph(bits: int) -> None:
    comp = UniformQuantization(SPEC, bits=bits)
    x, labels = make_batch(9, seed=8)
    _, split, *_ = split_exchange(comp, x, labels)
    ref = one_graph(comp, lambda t: quantize_ste(t, bits), x, labels)
    assert_grads_equal(split, ref)
