"""Frozen-head streaming (``model.head_trainable=false``): exact for any steps_per_message.

With a frozen head no gradient travels back, so the payload of every step is known before
any tail step; S payloads per message (S = all: one message per round) must give the
tail exactly what S = 1 gives, bit for bit, and the tail must train exactly as exact split
learning does with a head that does not move.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import shutil

import pytest
import torch

import fedadc.federated.client as client_module
from fedadc.config import compose
from fedadc.config.schema import (
    MethodConfig,
    RunConfig,
)
from fedadc.federated import InProcessTransport, rounds_for
from fedadc.federated.build import load_data
from fedadc.federated.reference import train_reference
from fedadc.federated.results import config_dict, identity, run_name
from fedadc.federated.server import FederatedServer
from fedadc.federated.timing import TIMING_FIELDS
from strategies.run_config import overrides_from_flower
from tests.flower_support import TINY_RUN, assert_run_equals_the_reference
from tests.test_federated import MICRO as FEDERATED_MICRO
from tests.test_federated import make_run
from tests.wire_tap import WireTap, assert_ledger_matches_the_wire

MICRO = dataclasses.replace(FEDERATED_MICRO, head_trainable=False)


def frozen_run(**federation: object) -> RunConfig:
    """tests/test_federated.py's run with a frozen head, 3 clients and 4 local steps."""
    run = make_run(**{"num_clients": 3, "local_steps": 4, **federation})
    return dataclasses.replace(run, model=MICRO)


def with_s(run: RunConfig, s: int) -> RunConfig:
    return dataclasses.replace(
        run, federation=dataclasses.replace(run.federation, steps_per_message=s)
    )


def assert_same_tail(a, b) -> None:
    for pa, pb in zip(
        a.server.split.tail.parameters(), b.server.split.tail.parameters(), strict=True
    ):
        torch.testing.assert_close(pa, pb, rtol=0, atol=0)
    assert a.server.losses == b.server.losses


def untimed(history: list[dict]) -> list[str]:
    """Metric rows without the fields read off a clock, as canonical JSON (NaN == NaN)."""
    rows = [{k: v for k, v in r.items() if k not in TIMING_FIELDS} for r in history]
    return [json.dumps(r, sort_keys=True) for r in rows]


class CountingTap(WireTap):
    """Records the wire (WireTap) and counts the messages each client receives."""

    def __init__(self, run) -> None:
        super().__init__(run)
        self.messages = 0

    def exchange(self, messages):
        self.messages += len(messages)
        return super().exchange(messages)


@pytest.mark.parametrize(
    "mode, tail_update",
    [("sfl", "per_client"), ("sfl", "joint"), ("sl", "per_client")],
)
def test_streaming_all_steps_in_one_message_equals_one_step_per_message(mode, tail_update):
    base = frozen_run(mode=mode, tail_update=tail_update)
    one = train_reference(with_s(base, 1))
    all_ = train_reference(with_s(base, 0))
    three = train_reference(with_s(base, 3))  # 4 steps: messages of 3 and 1
    for other in (all_, three):
        assert_same_tail(one, other)
        assert other.server.global_head == one.server.global_head
        assert other.server.ledger.bytes_by_kind() == one.server.ledger.bytes_by_kind()
        assert untimed(other.history) == untimed(one.history)


def test_streaming_does_not_depend_on_which_process_serves_a_message():
    """No cache (a new process per message) and round_end persistence (a warm worker)
    give the cached run's result."""
    run = with_s(frozen_run(), 2)
    cached = train_reference(run)
    uncached = train_reference(run, use_cache=False)
    warm = rounds_for(run)(run, InProcessTransport(run, persist="round_end")).run()
    for other in (uncached, warm):
        assert_same_tail(cached, other)
        assert other.server.ledger.records == cached.server.ledger.records


def test_frozen_head_trains_the_tail_as_exact_split_learning_with_a_still_head(monkeypatch):
    """Independent truth: the ordinary trainable protocol (S = 1, gradients back, head
    upload, FedAvg) whose client optimizer has lr 0, so the head never moves. Its tail sees
    the same payloads in the same order and must end bit-identical; the head too."""
    frozen = frozen_run()
    streamed = train_reference(with_s(frozen, 0))
    trainable = dataclasses.replace(
        frozen, model=dataclasses.replace(frozen.model, head_trainable=True)
    )
    original = client_module.set_lr
    monkeypatch.setattr(client_module, "set_lr", lambda optimizer, lr: original(optimizer, 0.0))
    still = train_reference(trainable)
    assert_same_tail(streamed, still)
    assert still.server.global_head == streamed.server.global_head  # lr 0: truly still
    # the same payloads went up; only the trainable protocol sent gradients and heads
    frozen, still_ = streamed.server.ledger.bytes_by_kind(), still.server.ledger.bytes_by_kind()
    for kind in ("activations", "labels"):
        assert frozen["up"][kind] == still_["up"][kind]
    assert still_["down"]["gradients"] > 0 and still_["up"]["weights"] > 0


def test_streaming_sends_no_gradients_no_uploads_and_one_message_per_round():
    run = with_s(frozen_run(), 0)
    tap = CountingTap(run)
    result = rounds_for(run)(run, tap).run()
    server, ledger = result.server, result.server.ledger
    assert_ledger_matches_the_wire(ledger, tap.sent)
    by_kind = ledger.bytes_by_kind()
    assert "gradients" not in by_kind["down"] and "weights" not in by_kind["up"]
    clients, rounds = run.federation.num_clients, run.federation.rounds
    assert tap.messages == clients * rounds  # S = all: one message per client per round
    heads = [r for r in ledger.records if r.direction == "down"]
    assert len(heads) == clients * rounds  # every byte down is a head download
    assert all(r.total_bytes == len(server.global_head) for r in heads)
    assert len(tap.sent["up"]) == clients * rounds * run.federation.local_steps
    # the head is exactly the one the run started with; the tail did train
    initial = FederatedServer(run, load_data(run))
    assert server.global_head == initial.global_head
    moved = [
        not torch.equal(a, b)
        for a, b in zip(
            server.split.tail.parameters(), initial.split.tail.parameters(), strict=True
        )
    ]
    assert any(moved)


def test_messages_per_round_are_ceil_of_local_steps_over_s():
    run = with_s(frozen_run(rounds=1, local_steps=5), 2)
    tap = CountingTap(run)
    rounds_for(run)(run, tap).run()
    assert tap.messages == run.federation.num_clients * math.ceil(5 / 2)


def test_frozen_head_with_s_above_one_does_not_warn(caplog):
    with caplog.at_level(logging.WARNING, logger="fedadc"):
        rounds_for(run := with_s(frozen_run(), 0))(run, WireTap(run))
    assert "steps_per_message" not in caplog.text


def test_budget_stops_a_streaming_run_before_it_is_exceeded():
    run = with_s(frozen_run(rounds=50, budget_epochs=0.3), 2)
    result = train_reference(run)
    assert result.stop_reason == "budget"
    assert result.server.spent() <= result.server.budget_bytes()


def test_a_method_with_a_trainable_client_encoder_is_refused_with_the_fix():
    with pytest.raises(ValueError, match=r"head_trainable=false.*bottlenet.*head_trainable=true"):
        compose(["method=bottlenet", "model.head_trainable=false"])
    run = dataclasses.replace(frozen_run(), method=MethodConfig("bottlenet", {"ratio": 0.1}))
    with pytest.raises(ValueError, match="client-side encoder has trainable parameters"):
        train_reference(run)
    with pytest.raises(ValueError, match=r"federation.shape=u.*shape=standard"):
        compose(["federation=ushape", "model.head_trainable=false"])
    for method in ("adc", "topk", "randtopk", "c3sl", "quantization", "identity"):
        compose([f"method={method}", "model.head_trainable=false"])  # all parameter-free


def test_older_run_directories_keep_their_names():
    run = compose([])
    old = config_dict(run)
    del old["model"]["head_trainable"]
    assert identity(old) == identity(run)
    assert run_name(run) == run_name(compose(["model.head_trainable=true"]))
    assert run_name(run) != run_name(compose(["model.head_trainable=false"]))


@pytest.mark.skipif(shutil.which("flwr") is None, reason="flwr CLI not installed")
def test_flower_streaming_equals_the_in_process_reference(flower, tmp_path):
    flat = {
        **TINY_RUN,
        "steps-per-message": 0,
        "overrides": f"{TINY_RUN['overrides']} model.head_trainable=false",
    }
    run = compose(overrides_from_flower(flat))
    assert not run.model.head_trainable and run.federation.messages_steps == 3
    reference = train_reference(run)
    run_dir, _ = flower.run(tmp_path, flat=flat)
    assert_run_equals_the_reference(run, run_dir, reference)
    rows = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert untimed([json.loads(r) for r in rows]) == untimed(reference.history)
