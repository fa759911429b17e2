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
    (down,) = server.backward_middle([Payload.from_bytes(end_grad.to_bytes())])
    plan = client.pending[0].plan
    client.backward(Payload.from_bytes(down.to_bytes()))

    # --- one autograd graph of head, codec, middle and end
    head, ref_tail, ref_comp = reference
    out = head(images)
    server_input, targets = _one_graph(ref_comp, name, out.tokens, labels, plan)
    ref_loss = F.cross_entropy(ref_tail(server_input), targets)
    ref_loss.backward()

    assert loss == pytest.approx(float(ref_loss.detach()), rel=1e-5)
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


# ---------------------------------------------------------------- federated runs

USHAPE = [
    "federation=ushape",
    "federation.num_clients=3",
    "federation.rounds=2",
    "federation.local_steps=3",
    "federation.batch_size=16",
    "model.kwargs.embed_dim=32",
    "model.kwargs.depth=4",
    "model.split_at=2",
    "seed=3",
]
LABEL_FIELDS = {"labels", "sizes"}


def _ushape_run(*extra: str):
    from fedadc.config import compose

    return compose([*USHAPE, *extra])


def _kinds_and_names(data: bytes) -> tuple[set[str], set[str]]:
    from tests.wire_tap import _kind_tags

    kinds = _kind_tags(data)
    return set(kinds.values()), set(kinds)


@pytest.mark.parametrize("method", ["adc", "identity", "topk"])
def test_ushape_run_sends_no_label_and_the_ledger_counts_every_byte(method):
    """Every message of a U-shaped run, both directions: no label tensor, no loss-side
    field (ADC's cluster sizes with weighting=size), no label histogram; and the ledger's
    per-kind bytes equal the serialized tensors (outputs down, their gradients up)."""
    from fedadc.federated import rounds_for
    from fedadc.wire.messages import FromClient
    from tests.wire_tap import WireTap, assert_ledger_matches_the_wire

    extra = [f"method={method}"]
    if method == "adc":
        extra.append("+method.params.weighting=size")
    run = _ushape_run(*extra)
    tap = WireTap(run)
    result = rounds_for(run)(run, tap).run()
    assert_ledger_matches_the_wire(result.server.ledger, tap.sent)
    for direction in ("up", "down"):
        for data in tap.sent[direction]:
            kinds, names = _kinds_and_names(data)
            assert "labels" not in kinds and not names & LABEL_FIELDS, (direction, names)
    # the reply type itself has no room for a label or a loss
    assert {f for f in FromClient.__dataclass_fields__} == {
        "partition",
        "payloads",
        "head",
        "num_examples",
        "output_gradients",
        "compute_s",
    }
    by_kind = result.server.ledger.bytes_by_kind()
    assert by_kind["down"]["activations"] > 0 and by_kind["up"]["gradients"] > 0
    assert "labels" not in by_kind["up"]
    assert all(row["test_accuracy"] >= 0 for row in result.history)


def test_a_standard_run_does_send_labels():
    """The inspection above can fail: the same run, standard shape, sends labels."""
    from fedadc.federated import rounds_for
    from tests.wire_tap import WireTap

    run = _ushape_run("federation=sfl")
    tap = WireTap(run)
    rounds_for(run)(run, tap).run()
    assert any("labels" in _kinds_and_names(d)[0] for d in tap.sent["up"])


@pytest.mark.parametrize("federation", ["ushape", "sl"])
def test_ushape_stateless_clients_equal_cached_ones_bit_for_bit(federation):
    """A client that keeps nothing between messages (a fresh process per message: head and
    end replayed from the stored plan and output) trains exactly as one that keeps its
    graphs; in sfl and in sl (clients in turn)."""
    from fedadc.federated.reference import train_reference

    extra = [f"federation={federation}", "federation.shape=u"]
    if federation == "sl":
        extra += ["federation.num_clients=2", "federation.budget_epochs=null"]
    run = _ushape_run(*extra)
    cached = train_reference(run)
    stateless = train_reference(run, use_cache=False)
    assert cached.server.global_head == stateless.server.global_head
    for a, b in zip(
        cached.server.split.tail.parameters(),
        stateless.server.split.tail.parameters(),
        strict=True,
    ):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert [r["test_accuracy"] for r in cached.history] == [
        r["test_accuracy"] for r in stateless.history
    ]


def test_a_malformed_output_gradient_drops_the_client_not_the_run(caplog):
    """A client whose gradient w.r.t. its output has the wrong shape is rejected before the
    middle steps; the middle steps on the others' rows; the client rejoins next round."""
    from fedadc.federated import InProcessTransport, rounds_for
    from fedadc.wire.payload import Kind

    class Corrupting(InProcessTransport):
        def exchange(self, messages):
            replies = super().exchange(messages)
            for pid, reply in replies.items():
                if pid == 1 and messages[pid].outputs and messages[pid].round == 1:
                    bad = Payload().add("gradients", torch.ones(2, 2, 2), Kind.GRADIENTS)
                    reply.output_gradients = [bad.to_bytes()]
            return replies

    run = _ushape_run()
    loop = rounds_for(run)(run, Corrupting(run))
    result = loop.run()
    assert [(rnd, err.client) for rnd, err in loop.rejected] == [(1, 1)]
    assert "output gradient" in loop.rejected[0][1].reason
    assert [row["clients"] for row in result.history] == [2, 3]


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (["federation=sfl", "federation.shape=u"], "tail_update=joint"),
        (["federation.steps_per_message=2"], "steps_per_message=1"),
        (["federation.shape=v"], "federation.shape"),
    ],
)
def test_impossible_ushape_configs_name_the_fix(overrides, match):
    with pytest.raises(ValueError, match=match):
        _ushape_run(*overrides)


def test_end_blocks_that_leave_the_server_nothing_are_refused():
    from fedadc.federated.build import build_split, load_data

    run = _ushape_run("model.end_blocks=2")  # depth 4, split_at 2: the middle would be empty
    with pytest.raises(ValueError, match="end_blocks"):
        build_split(run, load_data(run))


def test_ushape_warm_worker_persistence_equals_every_message():
    """The warm worker's policy (round state in memory, written at the round's finish)
    trains a U-shaped run exactly as the stateless policy, and the states end the same."""
    from fedadc.federated import InProcessTransport, rounds_for

    run = _ushape_run()
    results = {}
    for persist in ("every_message", "round_end"):
        transport = InProcessTransport(run, persist=persist)
        results[persist] = (rounds_for(run)(run, transport).run(), transport)
    (a, every), (b, kept) = results["every_message"], results["round_end"]
    assert a.server.global_head == b.server.global_head
    assert a.server.ledger.records == b.server.ledger.records
    for pid, state in every.states.items():
        assert not any(k.startswith(("output.", "pending.")) for k in state)
        other = kept.states[pid]
        assert state.keys() == other.keys()
        assert all(state[k] == other[k] for k in state if k != "version"), pid
