"""Top-k and RandTop-k: wire format, byte counts, index dtypes, which entries are kept
and the split-exchange gradient invariant."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fedadc.compression.topk import RandTopK, TopK, index_dtype
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


def mask_composite(indices: torch.Tensor, spec: TokenSpec = SPEC):
    def composite(tokens: torch.Tensor) -> torch.Tensor:
        mask = torch.zeros(tokens.shape[0], spec.sample_features)
        mask.scatter_(1, indices, 1.0)
        return tokens * mask.view_as(tokens)

    return composite


@pytest.mark.parametrize("cls", [TopK, RandTopK])
def test_topk_wire_and_bytes(cls: type[TopK]) -> None:
    batch = 6
    comp = cls(SPEC, ratio=0.25)
    assert comp.k == 10
    tokens, labels = make_batch(batch)
    plan = comp.make_plan(tokens, None, labels, torch.Generator().manual_seed(1))
    enc = comp.encode(tokens, labels, plan)
    payload = enc.payload
    assert payload["activations"].dtype == torch.float32
    assert payload["activations"].shape == (batch, 10)
    assert payload["indices"].dtype == torch.uint8
    assert payload["indices"].shape == (batch, 10)
    total = len(payload.to_bytes())
    assert total < identity_bytes(batch)
    kinds = bytes_by_kind(payload.to_bytes())
    assert kinds["activations"] == batch * 10 * 4
    assert kinds["indices"] == batch * 10 * 1
    assert_roundtrip_equal(payload)
    # server input holds exactly the kept values, zeros elsewhere
    rec = comp.receive(wire(payload))
    expected = mask_composite(plan["indices"])(tokens)
    assert torch.equal(rec.server_input, expected)
    grad_payload = comp.encode_gradient(torch.ones_like(rec.leaf), payload)
    assert set(grad_payload.tensors) == {"gradients"}
    assert bytes_by_kind(grad_payload.to_bytes())["gradients"] == batch * 10 * 4


def test_index_dtype_thresholds() -> None:
    assert index_dtype(256) == np.uint8
    assert index_dtype(257) == np.uint16
    assert index_dtype(65536) == np.uint16
    assert index_dtype(65537) == np.int32


def test_topk_uint16_indices_roundtrip() -> None:
    spec = TokenSpec(num_tokens=5, dim=64, num_classes=3)  # 320 features
    comp = TopK(spec, ratio=0.1)
    tokens, labels = make_batch(4, spec=spec)
    plan = comp.make_plan(tokens, None, labels)
    payload = wire(comp.encode(tokens, labels, plan).payload)
    assert payload["indices"].dtype == torch.uint16
    kinds = bytes_by_kind(payload.to_bytes())
    assert kinds["indices"] == 4 * comp.k * 2
    rec = comp.receive(payload)
    assert torch.equal(rec.server_input, mask_composite(plan["indices"], spec)(tokens))


def test_topk_keeps_largest_magnitudes() -> None:
    comp = TopK(SPEC, ratio=0.3)
    tokens, labels = make_batch(8, seed=3)
    idx = comp.make_plan(tokens, None, labels)["indices"]
    ref = np.argsort(-np.abs(tokens.flatten(1).numpy()), axis=1)[:, : comp.k]
    for row, ref_row in zip(idx.numpy(), ref, strict=True):
        assert set(row.tolist()) == set(ref_row.tolist())


def test_topk_ratio_one_keeps_everything() -> None:
    for cls in (TopK, RandTopK):
        comp = cls(SPEC, ratio=1.0)
        tokens, labels = make_batch(3)
        plan = comp.make_plan(tokens, None, labels)
        rec = comp.receive(wire(comp.encode(tokens, labels, plan).payload))
        assert torch.equal(rec.server_input, tokens)


@pytest.mark.parametrize("cls", [TopK, RandTopK])
def test_topk_split_gradient_matches_one_graph(cls: type[TopK]) -> None:
    comp = cls(SPEC, ratio=0.25)
    x, labels = make_batch(7, seed=2)
    plan, split, *_ = split_exchange(comp, x, labels)
    ref = one_graph(comp, mask_composite(plan["indices"]), x, labels)
    assert_grads_equal(split, ref)


def test_randtopk_replay_is_bit_exact_and_distinct() -> None:
    comp = RandTopK(SPEC, ratio=0.25)
    tokens, labels = make_batch(16, seed=4)
    plan = comp.make_plan(tokens, None, labels, torch.Generator().manual_seed(7))
    again = comp.make_plan(tokens, None, labels, torch.Generator().manual_seed(7))
    assert torch.equal(plan["indices"], again["indices"])
    first = comp.encode(tokens, labels, plan).payload.to_bytes()
    assert comp.encode(tokens, labels, plan).payload.to_bytes() == first
    for row in plan["indices"]:
        assert row.unique().numel() == comp.k
    default = comp.make_plan(tokens, None, labels, None)
    seeded0 = comp.make_plan(tokens, None, labels, torch.Generator().manual_seed(0))
    assert torch.equal(default["indices"], seeded0["indices"])
    other = comp.make_plan(tokens, None, labels, torch.Generator().manual_seed(8))
    assert not torch.equal(plan["indices"], other["indices"])


def expected_top_share(features: int, k: int, random_portion: float) -> float:
    """Exact E[share of top-k entries] when drawing k without replacement (dynamic program)."""
    a, b = (1 - random_portion) / k, random_portion / (features - k)
    probs = {0: 1.0}
    for t in range(k):
        new: dict[int, float] = {}
        for j, p in probs.items():
            top_mass, rest_mass = (k - j) * a, (features - k - (t - j)) * b
            q = top_mass / (top_mass + rest_mass)
            new[j + 1] = new.get(j + 1, 0.0) + p * q
            new[j] = new.get(j, 0.0) + p * (1 - q)
        probs = new
    return sum(j * p for j, p in probs.items()) / k


@pytest.mark.parametrize(("ratio", "tol"), [(1 / N_FEATURES, 0.03), (0.25, 0.02)])
def test_randtopk_top_share(ratio: float, tol: float) -> None:
    """Share of sampled indices inside the top-k set: 0.9 for k = 1; for k > 1 sampling
    without replacement depletes the top set, so the exact expectation is below 0.9."""
    comp = RandTopK(SPEC, ratio=ratio, random_portion=0.1)
    gen = torch.Generator().manual_seed(123)
    inside, total = 0, 0
    for step in range(100):
        tokens, labels = make_batch(16, seed=1000 + step)
        idx = comp.make_plan(tokens, None, labels, gen)["indices"]
        top = tokens.flatten(1).abs().topk(comp.k, dim=1).indices
        inside += int((idx.unsqueeze(2) == top.unsqueeze(1)).any(dim=2).sum())
        total += idx.numel()
    expected = expected_top_share(N_FEATURES, comp.k, 0.1)
    if comp.k == 1:
        assert expected == pytest.approx(0.9)
    assert inside / total == pytest.approx(expected, abs=tol)


def test_randtopk_without_random_portion_is_topk() -> None:
    tokens, labels = make_batch(8, seed=5)
    rand = RandTopK(SPEC, ratio=0.25, random_portion=0.0).make_plan(tokens, None, labels)
    top = TopK(SPEC, ratio=0.25).make_plan(tokens, None, labels)
    assert torch.equal(rand["indices"], top["indices"])


def test_topk_nominal_xi() -> None:
    comp = TopK(SPEC, ratio=0.25)
    bits = math.ceil(math.log2(8 * N_FEATURES))
    assert comp.nominal_xi(8) == pytest.approx(0.5 * (0.25 * (1 + bits / 32) + 0.25))
