"""C3-SL: wire format and bytes, forward values against a roll-based circular
convolution, the split-exchange gradient invariant and seeded keys."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from fedadc.compression.c3sl import C3SL
from fedadc.model.spec import TokenSpec
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


def roll_circular_conv(x: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
    """y[i] = sum_j x[j] key[(i - j) mod F], written with torch.roll."""
    return sum(x[..., j : j + 1] * torch.roll(key, j, dims=-1) for j in range(key.numel()))


def roll_circular_corr(e: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
    """y[i] = sum_m key[m] e[(m + i) mod F], written with torch.roll."""
    return sum(key[m] * torch.roll(e, -m, dims=-1) for m in range(key.numel()))


def c3sl_composite(keys: torch.Tensor, spec: TokenSpec = SPEC):
    group = keys.shape[0]

    def composite(tokens: torch.Tensor) -> torch.Tensor:
        batch = tokens.shape[0]
        flat = tokens.flatten(1)
        pad = -batch % group
        flat = torch.cat([flat, torch.zeros(pad, flat.shape[1])])
        grouped = flat.view(-1, group, flat.shape[1])
        enc = sum(roll_circular_conv(grouped[:, r], keys[r]) for r in range(group))
        slots = torch.stack([roll_circular_corr(enc, keys[r]) for r in range(group)], dim=1)
        return slots.reshape(-1, spec.num_tokens, spec.dim)[:batch]

    return composite


def test_c3sl_wire_and_bytes() -> None:
    comp = C3SL(SPEC, group_size=4)
    tokens, labels = make_batch(7)
    enc = comp.encode(tokens, labels, comp.make_plan(tokens, None, labels))
    payload = enc.payload
    assert set(payload.tensors) == {"activations", "labels"}  # keys are never sent
    assert payload["activations"].shape == (2, N_FEATURES)
    assert payload["activations"].dtype == torch.float32
    assert payload.batch_size == 7 and "batch_size" not in payload.meta
    total = len(payload.to_bytes())
    assert total < identity_bytes(7)
    assert bytes_by_kind(payload.to_bytes())["activations"] == 2 * N_FEATURES * 4
    assert_roundtrip_equal(payload)
    rec = comp.receive(wire(payload))
    assert rec.server_input.shape == (7, SPEC.num_tokens, SPEC.dim)
    assert rec.leaf.shape == enc.sent.shape
    # forward values agree with the roll-based reference
    keys = comp.keys
    ref_enc = sum(roll_circular_conv(tokens.flatten(1)[r], keys[r]) for r in range(4))
    torch.testing.assert_close(enc.sent[0], ref_enc, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(rec.server_input, c3sl_composite(keys)(tokens), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("batch", [8, 7, 1])
def test_c3sl_split_gradient_matches_one_graph(batch: int) -> None:
    comp = C3SL(SPEC, group_size=4, key_seed=3)
    x, labels = make_batch(batch, seed=6)
    _, split, enc, *_ = split_exchange(comp, x, labels)
    assert enc.sent.shape == (math.ceil(batch / 4), N_FEATURES)
    ref = one_graph(comp, c3sl_composite(comp.keys), x, labels)
    assert_grads_equal(split, ref, rtol=1e-4, atol=1e-6)


def test_c3sl_delta_key_is_exact() -> None:
    comp = C3SL(SPEC, group_size=1)
    comp.keys.zero_()
    comp.keys[0, 0] = 1.0
    tokens, labels = make_batch(5)
    payload = comp.encode(tokens, labels, {}).payload
    torch.testing.assert_close(comp.receive(wire(payload)).server_input, tokens)


def test_c3sl_random_keys_recover_the_right_slot() -> None:
    spec = TokenSpec(num_tokens=17, dim=32, num_classes=3)
    comp = C3SL(spec, group_size=4, key_seed=1)
    tokens, labels = make_batch(8, seed=9, spec=spec)
    decoded = comp.receive(wire(comp.encode(tokens, labels, {}).payload)).server_input.detach()
    assert torch.isfinite(decoded).all()
    flat_dec, flat_x = decoded.flatten(1), tokens.flatten(1)
    cos = F.normalize(flat_dec, dim=1) @ F.normalize(flat_x, dim=1).T  # 8 x 8
    right = cos.diagonal()
    assert (right > 0.2).all()
    for i in range(8):  # the correct sample beats the others of its group
        group = range(4 * (i // 4), 4 * (i // 4) + 4)
        assert all(right[i] > cos[i, j] for j in group if j != i)


def test_c3sl_keys_from_seed() -> None:
    a, b, c = C3SL(SPEC, 4, key_seed=5), C3SL(SPEC, 4, key_seed=5), C3SL(SPEC, 4, key_seed=6)
    assert torch.equal(a.keys, b.keys)
    assert not torch.equal(a.keys, c.keys)
    assert a.keys.shape == (4, N_FEATURES)
    torch.testing.assert_close(a.keys.norm(dim=1), torch.ones(4))
    assert "keys" in dict(a.named_buffers())
    assert a.nominal_xi(8) == 0.25
