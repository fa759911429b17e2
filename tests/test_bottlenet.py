"""BottleNet++: wire format and bytes, and the split-exchange gradient invariant with and
without the decoder's ReLU."""

from __future__ import annotations

import copy

import pytest
import torch

from fedadc.compression.bottlenet import BottleNetPP
from fedadc.wire.payload import bytes_by_kind
from tests.baseline_support import (
    SPEC,
    assert_grads_equal,
    assert_roundtrip_equal,
    identity_bytes,
    make_batch,
    one_graph,
    split_exchange,
)


def test_bottlenet_wire_and_bytes() -> None:
    torch.manual_seed(0)
    comp = BottleNetPP(SPEC, ratio=0.5)
    assert (comp.code_dim, comp.hidden_dim) == (4, 6)
    assert comp.realised_ratio == 0.5 and comp.nominal_xi(4) == 0.5
    assert comp.compress_at_eval
    tokens, labels = make_batch(6)
    payload = comp.encode(tokens, labels, {}).payload
    assert payload["activations"].shape == (6, SPEC.num_tokens, 4)
    assert payload["activations"].dtype == torch.float32
    total = len(payload.to_bytes())
    assert total < identity_bytes(6)
    assert bytes_by_kind(payload.to_bytes())["activations"] == 6 * SPEC.num_tokens * 4 * 4
    assert_roundtrip_equal(payload)
    assert comp.eval_forward(tokens).shape == tokens.shape


@pytest.mark.parametrize("decoder_relu", [False, True])
def test_bottlenet_split_gradient_matches_one_graph(decoder_relu: bool) -> None:
    torch.manual_seed(1)
    comp = BottleNetPP(SPEC, ratio=0.3, decoder_relu=decoder_relu)
    ref_comp = copy.deepcopy(comp)
    x, labels = make_batch(5, seed=7)
    _, split, *_ = split_exchange(comp, x, labels)
    ref = one_graph(ref_comp, lambda t: ref_comp.decoder(ref_comp.encoder(t)), x, labels)
    assert_grads_equal(split, ref)
    if decoder_relu:
        tokens, _ = make_batch(3)
        assert (comp.eval_forward(tokens) >= 0).all()
