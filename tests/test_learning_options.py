"""The learning-speed options: lr schedule, client optimizer state, FedAvgM, ADC variants.

Each is checked against an independent computation, not against a stored number.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from fedadc.compression.adc import ADC
from fedadc.compression.adc_math import cluster_sizes, soft_labels
from fedadc.config import compose
from fedadc.federated.optim_state import load_optimizer_bytes, optimizer_to_bytes
from fedadc.federated.reference import train_reference
from fedadc.model.spec import TokenSpec
from fedadc.schedule import LrCurve, lr_factor

TINY = [
    "model.kwargs.depth=2",
    "model.kwargs.embed_dim=16",
    "model.kwargs.num_heads=2",
    "model.split_at=1",
    "federation.num_clients=2",
    "federation.rounds=2",
    "federation.local_steps=2",
    "federation.batch_size=8",
    "data.max_train_samples=200",
]


def test_cosine_warmup_curve_matches_its_formula():
    total, warm = 100, 0.1
    assert lr_factor(0, total, "cosine", warm) == pytest.approx(1 / 11)
    assert lr_factor(9, total, "cosine", warm) == pytest.approx(10 / 11)
    assert lr_factor(10, total, "cosine", warm) == pytest.approx(1.0)
    assert lr_factor(55, total, "cosine", warm) == pytest.approx(0.5)
    assert lr_factor(100, total, "cosine", warm) == pytest.approx(0.0, abs=1e-12)
    assert lr_factor(50, total, "constant", 0.0) == 1.0
    # (round, step) -> position: round 2, step 3 of 4 local steps is position 7
    got = LrCurve(1e-3, rounds=5, local_steps=4, schedule="cosine", warmup=0.0).at(2, 3)
    assert got == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * 7 / 20)))
    with pytest.raises(ValueError, match="schedule must be one of"):
        lr_factor(0, 1, "linear", 0.0)


def test_cooldown_decays_the_constant_lr_linearly_over_the_last_steps():
    total = 100
    assert lr_factor(79, total, "constant", 0.0, 0.2) == 1.0
    assert lr_factor(80, total, "constant", 0.0, 0.2) == pytest.approx(1.0)
    assert lr_factor(90, total, "constant", 0.0, 0.2) == pytest.approx(0.5)
    assert lr_factor(99, total, "constant", 0.0, 0.2) == pytest.approx(1 / 20)
    # warm-up and cooldown together: up over the first 10 steps, down over the last 20
    assert lr_factor(0, total, "constant", 0.1, 0.2) == pytest.approx(1 / 11)
    assert lr_factor(50, total, "constant", 0.1, 0.2) == 1.0
    # round 10 of 10, step 3 of 4: position 39 of 40, 1 step before the end of a 10-step decay
    got = LrCurve(1e-3, rounds=10, local_steps=4, cooldown=0.25).at(10, 3)
    assert got == pytest.approx(1e-3 * 1 / 10)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["optim.cooldown=1.5"], r"optim.cooldown is a fraction"),
        (["optim.cooldown=0.6", "optim.warmup=0.5"], r"warmup \+ cooldown <= 1"),
        (["optim.cooldown=0.2", "optim.schedule=cosine"], r"set optim.cooldown=0"),
    ],
)
def test_impossible_cooldowns_are_refused(overrides, message):
    with pytest.raises(ValueError, match=message):
        compose(overrides)


def test_optimizer_state_bytes_round_trip_exactly():
    model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Linear(5, 3))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.8, 0.99))
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(4, 6)).square().sum().backward()
        opt.step()
    other = torch.optim.Adam(model.parameters(), lr=7.0)
    load_optimizer_bytes(other, optimizer_to_bytes(opt))
    want, got = opt.state_dict(), other.state_dict()
    assert got["param_groups"] == want["param_groups"]
    for index, values in want["state"].items():
        for name, tensor in values.items():
            assert got["state"][index][name].shape == tensor.shape
            assert torch.equal(got["state"][index][name], tensor)


def _spec() -> TokenSpec:
    return TokenSpec(num_tokens=5, num_prefix_tokens=1, dim=4, num_classes=3)


def test_within_class_clusters_never_mix_classes_while_there_are_enough_clusters():
    gen = torch.Generator().manual_seed(0)
    adc = ADC(_spec(), batch_ratio=0.5, token_ratio=0.6, cluster="within_class")
    for trial in range(20):
        labels = torch.randint(0, 3, (12,), generator=gen)
        tokens = torch.randn(12, 5, 4, generator=gen)
        attention = torch.rand(12, 5, generator=gen)
        plan = adc.make_plan(tokens, attention, labels, gen)
        merged = soft_labels(labels, plan["assignments"], 6, 3)
        assert set(merged.flatten().tolist()) <= {0.0, 1.0}, trial  # every label is hard


def test_size_weighted_loss_is_the_batch_loss_of_the_merged_samples():
    spec = _spec()
    adc = ADC(spec, batch_ratio=0.5, token_ratio=1.0, weighting="size")
    gen = torch.Generator().manual_seed(1)
    labels = torch.randint(0, 3, (10,), generator=gen)
    tokens = torch.randn(10, 5, 4, generator=gen)
    plan = adc.make_plan(tokens, torch.rand(10, 5, generator=gen), labels, gen)
    payload = adc.encode(tokens, labels, plan).payload
    received = adc.receive(payload)
    sizes = cluster_sizes(plan["assignments"], 5).float()
    assert torch.equal(received.weights, sizes)
    logits = torch.randn(5, 3, generator=gen)
    per_row = F.cross_entropy(logits, received.targets, reduction="none")
    # sum over merged samples of n_c * CE_c / B: each sample of the batch counts once
    assert float((per_row * received.weights).sum() / received.weights.sum()) == pytest.approx(
        float((per_row * sizes).sum() / 10)
    )
    with pytest.raises(ValueError, match="tokens_only merges none"):
        ADC(spec, xi=0.5, mode="tokens_only", weighting="size")


def test_size_weights_are_validated_on_receipt():
    adc = ADC(_spec(), batch_ratio=0.5, token_ratio=1.0, weighting="size")
    labels = torch.tensor([0, 1, 2, 0])
    tokens = torch.randn(4, 5, 4)
    plan = adc.make_plan(tokens, torch.rand(4, 5), labels, torch.Generator().manual_seed(0))
    payload = adc.encode(tokens, labels, plan).payload
    payload.tensors["sizes"] = torch.zeros(2, dtype=torch.int16)
    with pytest.raises(ValueError, match="cluster sizes >= 1"):
        adc.receive(payload)


def test_kept_client_state_carries_adam_moments_into_the_next_round():
    """With ``keep``, round 2 starts from the moments the client saved at round 1's end;
    with ``reset`` from zero. The runs diverge after round 1, not before."""
    reset = train_reference(compose(TINY))
    keep = train_reference(compose([*TINY, "optim.client_state=keep"]))
    assert reset.history[0]["train_loss"] == keep.history[0]["train_loss"]
    assert reset.history[1]["train_loss"] != keep.history[1]["train_loss"]


@pytest.mark.parametrize(("momentum", "lr"), [(0.5, 1.0), (0.5, 2.0), (0.0, 3.0)])
def test_head_momentum_is_fedavgm(momentum, lr):
    """Round r's global head = previous - lr * v_r, v_r = m * v_(r-1) + delta_r,
    delta = previous - mean (Reddi et al.'s FedAvgM with server learning rate lr)."""
    run = compose([*TINY, f"federation.head_momentum={momentum}", f"federation.head_lr={lr}"])
    from fedadc.federated.inprocess import InProcessTransport
    from fedadc.federated.rounds import SflRounds
    from fedadc.wire.payload import Payload

    heads: list[dict[str, torch.Tensor]] = []
    means: list[dict[str, torch.Tensor]] = []

    class Recording(SflRounds):
        def aggregate_heads(self, rnd, replies):
            heads.append(dict(Payload.from_bytes(self.server.global_head).tensors))
            total = sum(r.message.num_examples for r in replies.values())
            mean: dict[str, torch.Tensor] = {}
            for _, r in sorted(replies.items()):
                for k, v in r.head.tensors.items():
                    mean[k] = mean.get(k, 0) + r.message.num_examples / total * v.double()
            means.append(mean)
            super().aggregate_heads(rnd, replies)

    loop = Recording(run, InProcessTransport(run))
    loop.run()
    final = Payload.from_bytes(loop.server.global_head).tensors
    for name in final:
        d1 = heads[0][name].double() - means[0][name]
        after1 = heads[0][name].double() - lr * d1
        d2 = heads[1][name].double() - means[1][name]
        want = heads[1][name].double() - lr * (momentum * d1 + d2)
        assert torch.allclose(heads[1][name].double(), after1.float().double())
        assert torch.allclose(final[name].double(), want, atol=1e-6)
    # and not plain FedAvg: the head is not the mean of the uploads
    assert any(not torch.allclose(final[n].double(), means[1][n], atol=1e-6) for n in final)


def test_head_lr_must_be_positive():
    with pytest.raises(ValueError, match="head_lr must be > 0"):
        compose([*TINY, "federation.head_lr=0"])


def test_joint_tail_step_is_one_step_on_the_union_of_the_payloads():
    """``tail_update=joint``: the tail steps once on all clients' rows; each client gets the
    gradient of its own rows. Truth: the same tail stepping on one payload holding both."""
    import copy

    from fedadc.compression.identity import Identity
    from fedadc.step import SplitServer
    from fedadc.wire.payload import Kind, Payload

    torch.manual_seed(0)
    tail = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(5 * 4, 3))
    spec = _spec()
    a, b = torch.randn(3, 5, 4), torch.randn(2, 5, 4)
    la, lb = torch.tensor([0, 1, 2]), torch.tensor([2, 2])

    def payload(x, y):
        p = Payload().add("activations", x, Kind.ACTIVATIONS)
        return p.add("labels", y, Kind.LABELS)

    joint = SplitServer(copy.deepcopy(tail), Identity(spec), None)  # type: ignore[arg-type]
    joint.optimizer = torch.optim.SGD(joint.tail.parameters(), lr=0.1)
    union = SplitServer(copy.deepcopy(tail), Identity(spec), None)  # type: ignore[arg-type]
    union.optimizer = torch.optim.SGD(union.tail.parameters(), lr=0.1)
    grads, metrics = joint.step_joint([payload(a, la), payload(b, lb)])
    (whole,), whole_metrics = union.step_joint([payload(torch.cat([a, b]), torch.cat([la, lb]))])
    assert metrics == whole_metrics
    assert torch.equal(grads[0]["gradients"], whole["gradients"][:3])
    assert torch.equal(grads[1]["gradients"], whole["gradients"][3:])
    for p, q in zip(joint.tail.parameters(), union.tail.parameters(), strict=True):
        assert torch.equal(p, q)
