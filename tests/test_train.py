"""The reference trainer: exact split learning, seeded, budgeted, clear config errors."""

import copy
import math

import pytest
import timm
import torch
import torch.nn.functional as F

from fedadc.compression import create_compressor
from fedadc.data import digits
from fedadc.model.split import split_vit
from fedadc.train import ModelConfig, SplitClient, SplitServer, TrainConfig, train_reference
from fedadc.wire import Ledger, Payload
from tests.conftest import TINY_VIT

SMALL_MODEL = ModelConfig(
    kwargs={"patch_size": 2, "embed_dim": 32, "depth": 4, "num_heads": 2, "mlp_ratio": 2.0},
    split_at=2,
)


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


def test_reference_run_is_deterministic():
    cfg = TrainConfig(model=SMALL_MODEL, max_epochs=2, budget_epochs=1e6, seed=3)
    data = digits(seed=3)
    one = train_reference(cfg, data)
    two = train_reference(cfg, data)
    assert one.ledger.total_bytes() == two.ledger.total_bytes()
    for a, b in zip(one.split.head.parameters(), two.split.head.parameters(), strict=True):
        assert torch.equal(a, b)
    assert [h["test_accuracy"] for h in one.history] == [h["test_accuracy"] for h in two.history]
    assert one.stop_reason == "max_epochs" and one.steps == 2 * (len(data.train) // 64)


def test_adc_reference_run_learns_digits():
    result = train_reference(TrainConfig(model=SMALL_MODEL, max_epochs=15), digits())
    assert result.final.accuracy > 0.3  # chance is 0.1


def test_budget_stops_training_before_it_is_exceeded():
    cfg = TrainConfig(
        model=SMALL_MODEL, method="identity", method_params={}, budget_epochs=1.5, max_epochs=None
    )
    result = train_reference(cfg, digits())
    spec = result.split.spec
    budget = 2 * 1.5 * len(digits().train) * spec.uncompressed_bytes(1)
    assert result.stop_reason == "budget"
    assert result.ledger.total_bytes() <= budget
    # the next step would not have fit
    step_cost = result.ledger.total_bytes() / result.steps
    assert result.ledger.total_bytes() + step_cost > budget
    assert math.isclose(result.ledger.realised_xi(), 1.0)


def test_clients_in_turn_with_dirichlet_partitions_count_head_relays():
    cfg = TrainConfig(
        model=SMALL_MODEL,
        num_clients=3,
        partition="dirichlet",
        batch_size=32,
        max_epochs=1,
        lr=1e-3,
    )
    result = train_reference(cfg, digits())
    by_kind = result.ledger.bytes_by_kind()
    head_params = sum(p.numel() for p in result.split.head.parameters())
    assert by_kind["up"]["weights"] == by_kind["down"]["weights"] == 3 * head_params * 4
    assert by_kind["up"]["labels"] > 0  # ADC's soft labels are paid for
    assert result.ledger.all_in_ratio() > result.ledger.realised_xi()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"method": "nope"}, "unknown method"),
        ({"method_params": {"xii": 0.1}}, r"unknown method_params \['xii'\]"),
        ({"partition": "weird"}, "partition must be one of"),
        ({"batch_size": 0}, "batch_size must be"),
        ({"budget_scope": "some"}, "budget_scope"),
    ],
)
def test_bad_config_is_a_clear_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kwargs)


def test_partitions_too_small_for_a_batch_is_a_clear_error():
    cfg = TrainConfig(model=SMALL_MODEL, num_clients=50, batch_size=128, max_epochs=1)
    with pytest.raises(ValueError, match="full batch"):
        train_reference(cfg, digits())
