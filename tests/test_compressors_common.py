"""Invariants every registered compressor must satisfy, on a real split ViT.

The split exchange (encode -> bytes -> receive -> tail backward -> bytes -> client
backward) must give the client the same gradients as one autograd graph through the same
composite; payload bytes are the serialized size; nothing is NaN.
"""

import pytest
import torch
import torch.nn.functional as F

from fedadc.compression import create_compressor, list_compressors
from fedadc.wire import Ledger, Payload
from tests.conftest import make_tiny_split

PARAMS = {
    "identity": {},
    "adc": {"xi": 0.3},
    "topk": {"ratio": 0.2},
    "randtopk": {"ratio": 0.2},
    "c3sl": {"group_size": 2},
    "bottlenet": {"ratio": 0.25},
    "quantization": {"bits": 4},
}


def test_every_built_in_method_is_covered_here():
    from fedadc.compression.registry import _lookup

    built_in = {n for n in list_compressors() if _lookup(n).__module__.startswith("fedadc.")}
    assert built_in == set(PARAMS)


def _one_graph(compressor, name, tokens, labels, plan):
    """The composite in one graph. Quantization's wire has a straight-through gradient
    that is itself quantized, which only its own autograd function expresses."""
    if name == "quantization":
        from fedadc.compression.quantization import quantize_ste

        return quantize_ste(tokens, compressor.bits), labels
    enc = compressor.encode(tokens, labels, plan)
    return compressor.decoder_forward(enc.sent, enc.payload), enc.payload["labels"]


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_split_exchange_gradients_equal_one_graph(name):
    torch.manual_seed(0)
    split = make_tiny_split(split_at=2)
    compressor = create_compressor(name, split.spec, **PARAMS[name])
    images = torch.randn(8, 1, 8, 8)
    labels = torch.randint(0, 5, (8,))

    # --- split path, through bytes
    out = split.head(images)
    plan = compressor.make_plan(
        out.tokens.detach(), out.cls_attention, labels, torch.Generator().manual_seed(0)
    )
    enc = compressor.encode(out.tokens, labels, plan)
    ledger = Ledger()
    up = ledger.transmit(enc.payload, direction="up")
    received = compressor.receive(Payload.from_bytes(up))
    loss = F.cross_entropy(split.tail(received.server_input), received.targets)
    loss.backward()
    down = ledger.transmit(
        compressor.encode_gradient(received.leaf.grad, enc.payload), direction="down"
    )
    torch.autograd.backward(enc.sent, compressor.decode_gradient(Payload.from_bytes(down)))
    split_grads = [p.grad.clone() for p in split.head.parameters()]
    split_grads += [p.grad.clone() for p in compressor.parameters() if p.grad is not None]
    tail_grads = [p.grad.clone() for p in split.tail.parameters()]

    # --- one graph
    for p in [*split.head.parameters(), *split.tail.parameters(), *compressor.parameters()]:
        p.grad = None
    out = split.head(images)
    server_input, targets = _one_graph(compressor, name, out.tokens, labels, plan)
    ref_loss = F.cross_entropy(split.tail(server_input), targets)
    ref_loss.backward()
    ref_grads = [p.grad for p in split.head.parameters()]
    ref_grads += [p.grad for p in compressor.parameters() if p.grad is not None]

    torch.testing.assert_close(loss, ref_loss)
    assert len(split_grads) == len(ref_grads)
    for a, b in zip(split_grads, ref_grads, strict=True):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    for a, p in zip(tail_grads, split.tail.parameters(), strict=True):
        torch.testing.assert_close(a, p.grad, rtol=1e-4, atol=1e-6)
    assert ledger.total_bytes() == len(up) + len(down)


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_payload_is_smaller_than_base_and_nominal_xi_is_sane(name):
    split = make_tiny_split()
    compressor = create_compressor(name, split.spec, **PARAMS[name])
    base = create_compressor("identity", split.spec)
    out = split.head(torch.randn(16, 1, 8, 8))
    labels = torch.randint(0, 5, (16,))
    sizes = []
    for c in (compressor, base):
        plan = c.make_plan(
            out.tokens.detach(), out.cls_attention, labels, torch.Generator().manual_seed(0)
        )
        sizes.append(len(c.encode(out.tokens, labels, plan).payload.to_bytes()))
    if name == "identity":
        assert sizes[0] == sizes[1]
    else:
        assert sizes[0] < sizes[1]
    assert 0 < compressor.nominal_xi(16) <= 1
