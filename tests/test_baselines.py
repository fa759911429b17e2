"""Baseline compressors: wire format, byte counts and the split-exchange gradient invariant."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fedadc.compression import Compressor, create_compressor
from fedadc.compression.bottlenet import BottleNetPP
from fedadc.compression.c3sl import C3SL
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
from fedadc.compression.topk import RandTopK, TopK, index_dtype
from fedadc.model.spec import TokenSpec
from fedadc.wire.payload import Payload, bytes_by_kind

SPEC = TokenSpec(num_tokens=5, dim=8, num_classes=3)
N_FEATURES = SPEC.sample_features  # 40


def wire(payload: Payload) -> Payload:
    return Payload.from_bytes(payload.to_bytes())


def make_batch(batch: int, seed: int = 0, spec: TokenSpec = SPEC):
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randn(batch, spec.num_tokens, spec.dim, generator=gen)
    labels = torch.randint(0, spec.num_classes, (batch,), generator=gen)
    return tokens, labels


def make_nets(seed: int = 0, spec: TokenSpec = SPEC) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(seed)
    return nn.Linear(spec.dim, spec.dim), nn.Linear(spec.dim, spec.num_classes)


def tail_loss(tail: nn.Module, server_input: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(tail(server_input.mean(dim=1)), targets)


def split_exchange(comp: Compressor, x: torch.Tensor, labels: torch.Tensor, seed: int = 0):
    """One split-learning step through the wire; returns the plan, grads and both payloads."""
    head, tail = make_nets(seed)
    x = x.clone().requires_grad_(True)
    tokens = head(x)
    plan = comp.make_plan(tokens.detach(), None, labels, torch.Generator().manual_seed(seed))
    enc = comp.encode(tokens, labels, plan)
    fwd = wire(enc.payload)
    rec = comp.receive(fwd)
    tail_loss(tail, rec.server_input, rec.targets).backward()
    back = wire(comp.encode_gradient(rec.leaf.grad, fwd))
    grad = comp.decode_gradient(back)
    assert grad.shape == enc.sent.shape
    torch.autograd.backward(enc.sent, grad)
    grads = {"x": x.grad, **named_grads(head, "head"), **named_grads(tail, "tail")}
    grads.update(named_grads(comp, "comp"))
    return plan, grads, enc, fwd, back


def one_graph(
    comp: Compressor, composite: Callable[[torch.Tensor], torch.Tensor], x, labels, seed=0
):
    """The same step in one autograd graph, through an independently written composite."""
    head, tail = make_nets(seed)
    x = x.clone().requires_grad_(True)
    tail_loss(tail, composite(head(x)), labels).backward()
    grads = {"x": x.grad, **named_grads(head, "head"), **named_grads(tail, "tail")}
    grads.update(named_grads(comp, "comp"))
    return grads


def named_grads(module: nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{n}": p.grad for n, p in module.named_parameters()}


def assert_grads_equal(a: dict, b: dict, **tol: float) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert a[name] is not None, name
        torch.testing.assert_close(a[name], b[name], msg=lambda m, n=name: f"{n}: {m}", **tol)


def identity_bytes(batch: int) -> int:
    tokens, labels = make_batch(batch)
    return len(create_compressor("identity", SPEC).encode(tokens, labels, {}).payload.to_bytes())


def assert_roundtrip_equal(payload: Payload) -> None:
    back = wire(payload)
    assert back.tensors.keys() == payload.tensors.keys()
    assert back.kinds == payload.kinds and back.meta == payload.meta
    assert back.batch_size == payload.batch_size
    for name, tensor in payload.tensors.items():
        assert back[name].dtype == tensor.dtype, name
        assert torch.equal(back[name], tensor), name


def mask_composite(indices: torch.Tensor, spec: TokenSpec = SPEC):
    def composite(tokens: torch.Tensor) -> torch.Tensor:
        mask = torch.zeros(tokens.shape[0], spec.sample_features)
        mask.scatter_(1, indices, 1.0)
        return tokens * mask.view_as(tokens)

    return composite


# ==================================================================== top-k
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


# ==================================================================== C3-SL
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


# ==================================================================== BottleNet++
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


# ==================================================================== quantization
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


# ==================================================================== params, registry
@pytest.mark.parametrize(
    ("name", "params", "word"),
    [
        ("topk", {"ratio": 0.0}, "ratio"),
        ("topk", {"ratio": 1.5}, "ratio"),
        ("randtopk", {"ratio": 0.0}, "ratio"),
        ("randtopk", {"ratio": 0.5, "random_portion": 1.0}, "random_portion"),
        ("randtopk", {"ratio": 0.5, "random_portion": -0.1}, "random_portion"),
        ("bottlenet", {"ratio": 0.0}, "ratio"),
        ("bottlenet", {"ratio": 1.5}, "ratio"),
        ("quantization", {"bits": 0}, "bits"),
        ("quantization", {"bits": 17}, "bits"),
        ("quantization", {"bits": 4.0}, "bits"),
        ("c3sl", {"group_size": 0}, "group_size"),
        ("c3sl", {"key_seed": -1}, "key_seed"),
    ],
)
def test_invalid_params(name: str, params: dict, word: str) -> None:
    with pytest.raises(ValueError, match=word):
        create_compressor(name, SPEC, **params)


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("topk", {"ratio": 0.2}),
        ("randtopk", {"ratio": 0.2}),
        ("c3sl", {}),
        ("bottlenet", {"ratio": 0.25}),
        ("quantization", {"bits": 4}),
    ],
)
def test_registry_and_eval_forward(name: str, params: dict) -> None:
    comp = create_compressor(name, SPEC, **params)
    assert comp.name == name
    tokens, _ = make_batch(5)
    with torch.no_grad():
        assert comp.eval_forward(tokens).shape == tokens.shape
