"""Faults in a real `flwr run` simulation: a client that crashes or sends poison in the
middle of a round is dropped from that round, logged, and back in the next one.

Fault injection stays out of the product: ``tests/faulty_client.py`` wraps the real
ClientApp handlers and misbehaves as ``fault_plan.json`` says. Each test copies the app
(pyproject, client_app, server_app, strategies) into a temporary project whose pyproject
points ``clientapp`` at the wrapper, writes the plan next to it, and runs that project
(fedadc itself is imported from the installed package). The Flower run must end
bit-identical to the in-process reference in which the same client vanished at the same
exchange (``tests/test_faults.py``'s ``DropAt``).
"""

from __future__ import annotations

import csv
import functools
import json
import logging
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from flwr.app import RecordDict

from fedadc.config import compose
from fedadc.federated import InProcessTransport, rounds_for
from fedadc.federated.build import load_data
from fedadc.federated.results import RunDirectory
from fedadc.federated.server import FederatedServer
from fedadc.federated.threads import run_threads
from fedadc.wire import Payload
from strategies.run_config import overrides_from_flower
from tests.flower_support import ROOT, TINY_RUN

needs_flwr = pytest.mark.skipif(shutil.which("flwr") is None, reason="flwr CLI not installed")


def faulty_project(where: Path, plan: list[dict]) -> Path:
    """A copy of the Flower app whose ClientApp is ``tests/fault_injection/app.py``
    (installed as the package ``fault_injection``) with ``plan``."""
    app = where / "app"
    for package in ("client_app", "server_app", "strategies"):
        shutil.copytree(ROOT / package, app / package, ignore=shutil.ignore_patterns("__pycache__"))
    (app / "fault_injection").mkdir()
    (app / "fault_injection" / "__init__.py").write_text("")
    shutil.copy(ROOT / "tests" / "fault_injection" / "app.py", app / "fault_injection" / "app.py")
    (app / "fault_injection" / "fault_plan.json").write_text(json.dumps(plan))
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'clientapp = "client_app.app:app"' in pyproject
    (app / "pyproject.toml").write_text(
        pyproject.replace(
            'clientapp = "client_app.app:app"', 'clientapp = "fault_injection.app:app"'
        )
    )
    return app


class Vanish(InProcessTransport):
    """In-process: at exchange ``call`` of the run, client ``pid`` does not reply."""

    def __init__(self, run, vanish: dict[int, int]) -> None:
        super().__init__(run)
        self.vanish, self.calls = vanish, 0

    def exchange(self, messages):
        self.calls += 1
        replies = super().exchange(messages)
        if self.calls in self.vanish:
            replies.pop(self.vanish[self.calls], None)
        return replies


def reference_without(vanish: dict[int, int]):
    run = compose(overrides_from_flower(TINY_RUN))
    with run_threads(run):
        return run, rounds_for(run)(run, Vanish(run, vanish)).run()


def assert_equals_reference(run_dir: Path, run, reference) -> None:
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["bytes_up"] == reference.server.ledger.total_bytes("up")
    assert summary["bytes_down"] == reference.server.ledger.total_bytes("down")
    server = FederatedServer(run, load_data(run))
    RunDirectory(run_dir).load_checkpoint(server)
    ours = Payload.from_bytes(server.global_head).tensors
    ref = Payload.from_bytes(reference.server.global_head).tensors
    for key in ref:
        torch.testing.assert_close(ours[key], ref[key], rtol=0, atol=0, msg=key)
    for a, b in zip(
        server.split.tail.parameters(), reference.server.split.tail.parameters(), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@needs_flwr
def test_faulty_clients_are_dropped_for_the_round_and_back_in_the_next(flower, tmp_path):
    """Client 1 crashes on its 2nd step message of round 1 (the one that carries the
    gradient of step 0 and asks for step 1); client 2 answers the same message of round 2
    with NaN activations. Each is dropped from that round only, and the run equals the
    in-process one in which they vanished at those exchanges."""
    steps = int(TINY_RUN["local-steps"])  # exchanges per round: 1 + steps (S = 1)
    plan = [
        {"kind": "crash", "partition": 1, "round": 1, "first_step": 1},
        {"kind": "nan", "partition": 2, "round": 2, "first_step": 1},
    ]
    out = tmp_path / "out"
    out.mkdir()
    run_dir, stdout = flower.run(out, app=faulty_project(tmp_path, plan), extra="fast-sim=true")
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [1, 2]  # the run completed every round
    assert [r["clients"] for r in rows] == [2, 2]
    assert "injected fault: partition 1 crashes" in stdout, stdout[-3000:]
    assert "round 1: clients [1] failed and are dropped from this round" in stdout
    assert "round 2: client 2: payload rejected: step 1: activations contain NaN" in stdout
    uploads = [
        (int(row["round"]), int(row["client"]))
        for row in csv.DictReader((run_dir / "ledger.csv").open())
        if row["direction"] == "up" and int(row.get("weights", 0) or 0) > 0
    ]
    assert sorted(uploads) == [(1, 0), (1, 2), (2, 0), (2, 1)]  # 1 back in round 2
    run, reference = reference_without({2: 1, 1 + steps + 2: 2})
    assert_equals_reference(run_dir, run, reference)


# ---------------------------------------------------------------- the strategy's transport


class FakeReply:
    def __init__(self, node: int, content=None, error: str | None = None) -> None:
        self.metadata = SimpleNamespace(src_node_id=node, reply_to_message_id=f"to-{node}")
        self.content = content
        self.error = SimpleNamespace(reason=error)

    def has_error(self) -> bool:
        return self.error.reason is not None


class FakeGrid:
    """Answers like Flower's Grid: each pull returns the replies that came back (each once);
    its own clock advances only when the strategy sleeps between pulls."""

    def __init__(self, replies) -> None:
        self.replies, self.now, self.pulls = list(replies), 0.0, 0

    def push_messages(self, messages):
        return [f"to-{m['dst_node_id']}" for m in messages]

    def pull_messages(self, ids):
        self.pulls += 1
        ids = set(ids)
        got = [r for r in self.replies if r.metadata.reply_to_message_id in ids]
        self.replies = [r for r in self.replies if r not in got]
        return got

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_the_strategy_drops_silent_failed_and_garbled_clients(caplog, monkeypatch):
    """Client 0 replies, client 1 never replies within federation.timeout_s, client 2
    replies with an error, client 3 with a record fedadc cannot decode, client 4 with a
    reply claiming partition 0 (kept under its own partition, for the server to reject)."""
    from fedadc.wire.messages import FromClient, ToClient
    from strategies import split_learning
    from strategies.codec import encode_from_client
    from strategies.split_learning import SplitLearningStrategy

    run = compose(
        [*overrides_from_flower({**TINY_RUN, "num-clients": 5}), "federation.timeout_s=7"]
    )
    nodes = {pid: 100 + pid for pid in range(5)}
    grid = FakeGrid(
        [
            FakeReply(100, encode_from_client(FromClient(partition=0))),
            FakeReply(102, error="ClientApp raised"),
            FakeReply(103, RecordDict()),
            FakeReply(104, encode_from_client(FromClient(partition=0))),
        ]
    )
    # outside a running ServerApp Flower cannot build a Message; the grid is fake anyway
    monkeypatch.setattr(split_learning, "Message", lambda **fields: fields)
    monkeypatch.setattr(
        split_learning,
        "push_pull",
        functools.partial(split_learning.push_pull, clock=grid.clock, sleep=grid.sleep),
    )
    strategy = SplitLearningStrategy(run, poll_s=0.5)
    strategy.grid, strategy.nodes = grid, nodes
    with caplog.at_level(logging.WARNING):
        got = strategy.exchange({pid: ToClient(1, 0, 1) for pid in range(5)})
    assert grid.now == pytest.approx(7.0)  # waited for client 1 exactly federation.timeout_s
    assert grid.pulls == 15  # at 0, 0.5, ..., 7.0 s: every poll_s up to the deadline
    assert sorted(got) == [0, 4] and got[4].partition == 0
    text = caplog.text
    assert "no reply within federation.timeout_s=7.0 from clients [1]" in text
    assert "client 2 failed: ClientApp raised" in text
    assert "client 3: payload rejected: malformed message" in text
