"""When the client writes its state (``persist``): ``round_end`` keeps a round in memory and
writes weights and optimizer at the round's finish only, with results bit-identical to the
default ``every_message``; a mid-round loss of the in-memory round (a warm worker restarted)
drops that client for the round, as a crash does, and it is back at the next round start.
In-process (the apps choose the policy: client_app/app.py; every_message recompute over
many messages: test_federated.py::test_stateful_client_equals_the_in_memory_one_bit_for_bit).
"""

from __future__ import annotations

import pytest

from fedadc.federated import FederatedClient, InProcessTransport, ToClient, rounds_for
from fedadc.federated import client as client_module
from fedadc.federated.client import RoundStateLost
from tests.fault_support import HOSTILE, small_run
from tests.test_faults import DropAt
from tests.test_federated import assert_same

STEPS = {
    "S=1": {"local_steps": 2},
    "S=2": {"local_steps": 4, "steps_per_message": 2},
    "S=2-stale": {"local_steps": 4, "steps_per_message": 2, "head_update": "stale"},
}
METHODS = {"adc": {"xi": 0.25}, "identity": {}}
DURABLE = ("weights", "optim")


def forget_live(pid: int) -> None:
    """What a worker restart does to client ``pid``: its live objects are gone."""
    for key in [k for k in client_module._LIVE if k[1] == pid]:
        del client_module._LIVE[key]


class RecordingState(dict):
    """A client's state that records every write (key, bytes)."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[tuple[str, int]] = []

    def __setitem__(self, key: str, value: bytes) -> None:
        self.writes.append((key, len(value)))
        super().__setitem__(key, value)


class RecordingTransport(InProcessTransport):
    """Keeps, per exchange, each client's message, writes to its state, and state keys after."""

    def __init__(self, run, **kwargs) -> None:
        super().__init__(run, **kwargs)
        self.log: list[dict[int, tuple[ToClient, list[tuple[str, int]], set[str]]]] = []

    def exchange(self, messages):
        for pid in messages:
            self.states.setdefault(pid, RecordingState()).writes = []
        replies = super().exchange(messages)
        self.log.append(
            {
                pid: (msg, self.states[pid].writes, set(self.states[pid]))
                for pid, msg in messages.items()
            }
        )
        return replies


class ForgetAt(InProcessTransport):
    """Client HOSTILE's live objects are forgotten before the ``at``-th exchange."""

    def __init__(self, run, at: int, **kwargs) -> None:
        super().__init__(run, **kwargs)
        self.at, self.calls = at, 0

    def exchange(self, messages):
        self.calls += 1
        if self.calls == self.at:
            forget_live(HOSTILE)
        return super().exchange(messages)


def run_with(transport_type, method: str, steps: dict, **kwargs):
    run = small_run(method, METHODS[method], rounds=2, **steps)
    transport = transport_type(run, **kwargs)
    return rounds_for(run)(run, transport).run(), transport


@pytest.mark.parametrize("steps", STEPS.values(), ids=STEPS.keys())
@pytest.mark.parametrize("method", METHODS)
def test_round_end_equals_every_message_bit_for_bit(method, steps):
    """Same head, tail and ledger; after the run each client's state holds the same bytes
    (weights, optimizer, meta) as with every_message: the state is the recovery truth."""
    default, every = run_with(InProcessTransport, method, steps)
    kept, round_end = run_with(InProcessTransport, method, steps, persist="round_end")
    assert_same(default, kept)
    assert [h["clients"] for h in kept.history] == [3, 3]
    for pid, state in every.states.items():
        other = round_end.states[pid]
        assert state.keys() == other.keys() == {"version", "meta", *DURABLE}
        for key in ("meta", *DURABLE):
            assert state[key] == other[key], (pid, key)


@pytest.mark.parametrize("steps", [STEPS["S=1"], STEPS["S=2"]], ids=["S=1", "S=2"])
def test_round_end_writes_weights_and_optimizer_only_at_the_round_finish(steps):
    _, every = run_with(RecordingTransport, "adc", steps)
    _, round_end = run_with(RecordingTransport, "adc", steps, persist="round_end")
    for exchange in every.log:  # today: the whole head and optimizer every message
        for _, writes, _ in exchange.values():
            assert {k for k, _ in writes} >= {*DURABLE, "version", "meta"}
    finishes = 0
    for exchange, same in zip(round_end.log, every.log, strict=True):
        for pid, (msg, writes, keys) in exchange.items():
            if msg.finish:  # the same bytes as every_message writes there
                finishes += 1
                assert writes == same[pid][1]
                assert keys == {"version", "meta", *DURABLE}
            else:  # version and meta only; last round's weights are not carried either
                assert sorted(k for k, _ in writes) == ["meta", "version"]
                assert sum(n for _, n in writes) < 200
                assert keys == {"version", "meta"}
    assert finishes == 2 * 3


@pytest.mark.parametrize("steps", [STEPS["S=1"], STEPS["S=2"]], ids=["S=1", "S=2"])
def test_a_lost_round_in_memory_is_a_clear_error_not_stale_weights(steps):
    run = small_run("adc", METHODS["adc"], **steps)
    state: dict[str, bytes] = {}
    client = FederatedClient.for_run(run, HOSTILE, state, persist="round_end")
    count = run.federation.messages_steps
    client.handle(ToClient(1, 0, count, head=initial_head(run)))
    forget_live(HOSTILE)
    gradients = [b"never decoded"] * count
    with pytest.raises(RoundStateLost, match=rf"client {HOSTILE} lost its in-memory round state"):
        client.handle(ToClient(1, count, count, gradients=gradients))
    # a process that persists every message finds the same state and refuses it too
    stock = FederatedClient.for_run(run, HOSTILE, state)
    with pytest.raises(RoundStateLost, match="rejoins at the next round start"):
        stock.handle(ToClient(1, count, count, gradients=gradients))


def initial_head(run) -> bytes:
    loop = rounds_for(run)(run, InProcessTransport(run))
    return loop.server.global_head


@pytest.mark.parametrize("steps", [STEPS["S=1"], STEPS["S=2"]], ids=["S=1", "S=2"])
@pytest.mark.parametrize("at", [2, 3], ids=["mid-round", "at-finish"])
def test_a_worker_restart_mid_round(at, steps, caplog):
    """Live objects lost before round 1's ``at``-th exchange (3 per round: start, one with
    gradients, finish). round_end: the client is dropped for that round exactly as a crashed
    client (DropAt) and trains again next round; every_message: it recomputes from its
    state, the run equals the uninterrupted one."""
    run = small_run("adc", METHODS["adc"], rounds=2, **steps)
    dropped = rounds_for(run)(run, ForgetAt(run, at, persist="round_end")).run()
    crashed = rounds_for(run)(run, DropAt(run, at)).run()
    assert dropped.stop_reason == "rounds"
    assert [h["clients"] for h in dropped.history] == [2, 3]
    assert_same(dropped, crashed)
    assert f"client {HOSTILE} lost its in-memory round state" in caplog.text
    assert f"clients [{HOSTILE}] failed and are dropped" in caplog.text
    recomputed = rounds_for(run)(run, ForgetAt(run, at)).run()
    uninterrupted = rounds_for(run)(run, InProcessTransport(run)).run()
    assert [h["clients"] for h in recomputed.history] == [3, 3]
    assert_same(recomputed, uninterrupted)


def test_round_end_needs_the_live_cache():
    run = small_run()
    with pytest.raises(ValueError, match="use_cache=True"):
        FederatedClient.for_run(run, 0, {}, use_cache=False, persist="round_end")
    with pytest.raises(ValueError, match="persist must be one of"):
        FederatedClient.for_run(run, 0, {}, persist="never")  # type: ignore[arg-type]


def test_the_client_app_keeps_a_round_in_memory_only_in_the_warm_worker(monkeypatch):
    from client_app import app
    from client_app.warm.common import WARM_WORKER_ENV

    monkeypatch.delenv(WARM_WORKER_ENV, raising=False)
    assert app._persist() == "every_message"  # stock flwr-clientapp, simulation
    monkeypatch.setenv(WARM_WORKER_ENV, "1")
    assert app._persist() == "round_end"
