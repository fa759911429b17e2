"""The reference trainer: exact split learning, seeded, budgeted, clear config errors."""

import copy

import timm
import torch
import torch.nn.functional as F

from fedadc.compression import create_compressor
from fedadc.model.split import split_vit
from fedadc.step import SplitClient, SplitServer
from fedadc.wire import Ledger, Payload
from tests.conftest import TINY_VIT


def test_identity_split_training_equals_unsplit_training_step_by_step():
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", **TINY_VIT)
    head, tail, spec = split_vit(copy.deepcopy(model), 2)
    # same kernels on both sides: the head records attention on the explicit softmax path
    model.blocks[1].attn.fused_attn = False
    compressor = create_compressor("identity", spec)
    client = SplitClient(head, compressor, torch.optim.Adam(head.parameters(), lr=1e-3))
    server = SplitServer(tail, compressor, torch.optim.Adam(tail.parameters(), lr=1e-3))
    reference = torch.optim.Adam(model.parameters(), lr=1e-3)
    unsplit = dict(model.named_parameters())
    ledger = Ledger()
    g = torch.Generator().manual_seed(0)
    for step in range(5):
        images = torch.randn(8, 1, 8, 8, generator=g)
        labels = torch.randint(0, 5, (8,), generator=g)
        up = ledger.transmit(client.forward(images, labels), direction="up", step=step)
        grad, _ = server.step(Payload.from_bytes(up))
        client.backward(Payload.from_bytes(ledger.transmit(grad, direction="down", step=step)))
        reference.zero_grad()
        F.cross_entropy(model(images), labels).backward()
        reference.step()
        seen = set()
        for module in (head.vit, tail.vit):  # sliced timm blocks keep their names
            for name, p in module.named_parameters():
                torch.testing.assert_close(p, unsplit[name], rtol=1e-5, atol=1e-6, msg=name)
                seen.add(name)
        assert seen == set(unsplit)
