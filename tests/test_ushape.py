"""U-shaped split learning (``federation.shape=u``): the client keeps the model's end and
its labels, the server holds the middle blocks.

Independent truths: one U-shaped step through bytes gives every parameter (head, client
codec, middle, server codec, end) the gradient of one autograd graph of the whole model;
the end equals the tail it was cut from; a run never puts a label on the wire.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from fedadc.compression import create_compressor
from fedadc.model.ushape import UShapeTail
from fedadc.step import SplitClient, SplitServer
from fedadc.wire import Payload
from tests.conftest import make_tiny_split
from tests.test_compressors_common import PARAMS, _one_graph


def _sgd(params) -> torch.optim.Optimizer:
    return torch.optim.SGD(list(params), lr=0.0)  # grads stay in .grad, weights unchanged


def _grads(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.grad.clone() for p in module.parameters() if p.grad is not None]


@pytest.mark.parametrize("end_blocks", [0, 1])
@pytest.mark.parametrize("name", sorted(PARAMS))
def test_ushape_step_gradients_equal_one_graph(name, end_blocks):
    torch.manual_seed(0)
    split = make_tiny_split(split_at=1)
    tail = UShapeTail(split.tail, end_blocks)
    assert tail.end_reads_class_token_only == (end_blocks == 0)
    compressor = create_compressor(name, split.spec, **PARAMS[name])
    reference = copy.deepcopy((split.head, tail, compressor))
    images = torch.randn(8, 1, 8, 8)
    labels = torch.randint(0, 5, (8,))

    # --- U-shaped step through bytes: up (no labels), down output, up grad, down grad
    client_params = [*split.head.parameters(), *compressor.encoder.parameters()]
    client = SplitClient(
        split.head,
        compressor,
        _sgd([*client_params, *tail.end.parameters()]),
        torch.Generator().manual_seed(0),
        end=tail.end,
    )
    server = SplitServer(
        tail, compressor, _sgd([*tail.middle.parameters(), *compressor.decoder.parameters()])
    )
    up = client.forward(images, labels)
    assert set(up.tensors).isdisjoint({"labels", "sizes"})
    (output,) = server.forward_middle([Payload.from_bytes(up.to_bytes())])
    rows = client.pending[0].loss_fields["labels"].shape[0]
    expected_tokens = 1 if end_blocks == 0 else output["outputs"].shape[1]
    assert output["outputs"].shape[:2] == (rows, expected_tokens)
    end_grad, loss = client.end_step(Payload.from_bytes(output.to_bytes()))
    (down,), metrics = server.backward_middle([Payload.from_bytes(end_grad.to_bytes())], [loss])
    plan = client.pending[0].plan
    client.backward(Payload.from_bytes(down.to_bytes()))

    # --- one autograd graph of head, codec, middle and end
    head, ref_tail, ref_comp = reference
    out = head(images)
    server_input, targets = _one_graph(ref_comp, name, out.tokens, labels, plan)
    ref_loss = F.cross_entropy(ref_tail(server_input), targets)
    ref_loss.backward()

    assert loss == pytest.approx(float(ref_loss.detach()), rel=1e-5)
    assert metrics.loss == pytest.approx(loss)
    for mine, theirs in [
        (split.head, head),
        (compressor, ref_comp),
        (tail.middle, ref_tail.middle),
        (tail.end, ref_tail.end),
    ]:
        a, b = _grads(mine), _grads(theirs)
        assert len(a) == len(b) and (len(a) > 0 or mine is compressor)
        for x, y in zip(a, b, strict=True):
            assert torch.isfinite(x).all()
            torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-6)


def test_ushape_tail_equals_the_tail_it_was_cut_from():
    split = make_tiny_split(split_at=1)
    tokens = torch.randn(4, 17, 24)
    split.tail.eval()
    for end_blocks in (0, 1, 2):
        tail = UShapeTail(split.tail, end_blocks).eval()
        assert len(tail.middle.blocks) == 3 - end_blocks
        assert torch.equal(tail(tokens), split.tail(tokens))
    with pytest.raises(ValueError, match="end_blocks"):
        UShapeTail(split.tail, 3)
