"""Faults: a client whose reply is rejected is dropped from the round, and the run goes on
exactly as if that client had crashed there; a crashed client counts against
``min_train_clients`` (in-process; Flower: test_flower_faults.py; which replies are rejected
and why: test_payload_validation.py; killed servers: test_resume.py).
"""

from __future__ import annotations

import dataclasses

import pytest

from fedadc.federated import InProcessTransport, rounds_for
from tests.fault_support import HOSTILE, edit, labels, small_run, with_value
from tests.test_federated import assert_same


class HostileTransport(InProcessTransport):
    """Client HOSTILE spoils its reply at the ``at``-th exchange (2: its step-1 payload,
    mid-round; 3: its head upload)."""

    def __init__(self, run, spoil, at: int) -> None:
        super().__init__(run)
        self.spoil, self.at, self.calls = spoil, at, 0

    def exchange(self, messages):
        self.calls += 1
        replies = super().exchange(messages)
        if self.calls == self.at and HOSTILE in replies:
            replies[HOSTILE] = self.spoil(replies[HOSTILE])
        return replies


class DropAt(InProcessTransport):
    """Client ``client`` (None: every client asked) crashes at the ``at``-th exchange."""

    def __init__(self, run, at: int, client: int | None = HOSTILE) -> None:
        super().__init__(run)
        self.at, self.client, self.calls = at, client, 0

    def exchange(self, messages):
        self.calls += 1
        replies = super().exchange(messages)
        if self.calls == self.at:
            for pid in list(replies):
                if self.client in (None, pid):
                    del replies[pid]
        return replies


@pytest.mark.parametrize(
    "at, spoil",
    [
        (2, lambda r: dataclasses.replace(r, payloads=[b"\x00" * 64])),
        (
            2,
            lambda r: dataclasses.replace(
                r, payloads=[edit(r.payloads[0], labels=with_value(labels(r.payloads[0]), 99))]
            ),
        ),
        (3, lambda r: dataclasses.replace(r, num_examples=10**6)),
    ],
    ids=["garbage-mid-round", "bad-label-mid-round", "inflated-head-weight"],
)
def test_a_run_with_a_hostile_client_equals_one_where_it_crashed(at, spoil, caplog):
    """Rejected means dropped: the result is bit-identical to the run in which that client
    crashed at the same point, so nothing of the rejected reply reached tail or heads."""
    run = small_run("adc", {"xi": 0.25}, rounds=2)
    hostile = rounds_for(run)(run, HostileTransport(run, spoil, at))
    result = hostile.run()
    crashed = rounds_for(run)(run, DropAt(run, at)).run()
    assert result.stop_reason == "rounds"
    assert [h["clients"] for h in result.history] == [2, 3]
    assert_same(result, crashed)
    assert [(rnd, e.client) for rnd, e in hostile.rejected] == [(1, HOSTILE)]
    assert f"round 1: client {HOSTILE}: payload rejected:" in caplog.text


def test_a_crashed_client_in_sl_mode_counts_and_min_clients_holds():
    run = small_run(mode="sl", rounds=2, min_train_clients=2)
    result = rounds_for(run)(run, DropAt(run, 2, client=None)).run()
    assert result.stop_reason == "rounds"
    run = small_run(mode="sl", rounds=2, min_train_clients=3)
    with pytest.raises(
        RuntimeError, match=r"round 1: only 2 of 3 clients finished.*min_train_clients=3"
    ):
        rounds_for(run)(run, DropAt(run, 2, client=None)).run()


def test_min_train_clients_above_num_clients_fails_before_training():
    with pytest.raises(ValueError, match=r"federation\.min_train_clients=5 can never be met"):
        small_run(min_train_clients=5)
