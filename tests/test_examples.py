"""The worked example of docs/adding-a-method.md satisfies the built-in methods' invariants."""

import torch
import torch.nn.functional as F

from fedadc.compression import create_compressor, list_compressors
from fedadc.wire import Payload
from tests.conftest import make_tiny_split


def test_strided_tokens_example_registers_and_its_split_gradient_is_exact():
    import examples.strided_tokens  # noqa: F401  (registers "strided_tokens")

    assert "strided_tokens" in list_compressors()
    split = make_tiny_split()
    c = create_compressor("strided_tokens", split.spec, stride=4)
    images, labels = torch.randn(6, 1, 8, 8), torch.randint(0, 5, (6,))

    out = split.head(images)
    enc = c.encode(out.tokens, labels, c.make_plan(out.tokens, out.cls_attention, labels))
    received = c.receive(Payload.from_bytes(enc.payload.to_bytes()))
    F.cross_entropy(split.tail(received.server_input), received.targets).backward()
    grad = c.decode_gradient(
        Payload.from_bytes(c.encode_gradient(received.leaf.grad, enc.payload).to_bytes())
    )
    torch.autograd.backward(enc.sent, grad)
    split_grads = [p.grad.clone() for p in split.head.parameters()]

    split.head.zero_grad()
    split.tail.zero_grad()
    F.cross_entropy(split.tail(split.head(images).tokens[:, c.kept]), labels).backward()
    for a, p in zip(split_grads, split.head.parameters(), strict=True):
        torch.testing.assert_close(a, p.grad)
    assert enc.sent.shape == (6, 1 + 4, 24)  # CLS + patches 0, 4, 8, 12 of 16
    assert c.nominal_xi(6) == 5 / 17
