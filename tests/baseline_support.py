"""Shared by the baseline compressor tests (test_topk.py, test_c3sl.py, test_bottlenet.py,
test_quantization.py): a toy token spec, seeded batches and nets, one split-learning step
through the wire, the same step in one autograd graph, and the comparisons between them."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from fedadc.compression import Compressor, create_compressor
from fedadc.model.spec import TokenSpec
from fedadc.wire.payload import Payload

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
