"""A warm ClientApp worker SIGKILLed in the middle of a round, on a real loopback deployment.

The project's apps (`flwr run .`) on 2 warm SuperNodes, 2 rounds of 4 steps at S = 1 (5
exchanges per round). While round 1 runs, client 1's worker is killed between two of its
messages: the test SIGSTOPs the worker and kills it only when its SuperNode's log shows every
received message answered (``Receiving:`` lines == ``Sent successfully`` lines) after at least
2 step messages, else it lets it go on (SIGCONT) and tries again, so the kill never lands
inside a message (that path waits for Flower's task expiry; docs/warm-runtime.md). The
launcher starts a new worker; the round's next message finds no live round state
(``RoundStateLost``) and the server drops client 1 for round 1 exactly as a crashed client:
the run completes both rounds, client 1 uploads no head in round 1 and one in round 2, and
the result equals, bit for bit, the in-process run in which client 1 vanished at that
exchange. About a minute on 2 cores.
"""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import flwr
import pytest

from fedadc.config import compose
from fedadc.federated import rounds_for
from fedadc.federated.threads import run_threads
from strategies import flower_private
from strategies.local_deployment import LocalDeployment
from strategies.run_config import overrides_from_flower
from tests.flower_support import TINY_RUN
from tests.test_deployment import needs_flower
from tests.test_flower_faults import Vanish, assert_equals_reference

RUN = {**TINY_RUN, "num-clients": 2, "local-steps": 4, "steps-per-message": 1}
PER_ROUND = 5  # exchanges per round: 4 steps at S = 1, plus the finish message
VICTIM = 1


def _counts(log: str) -> tuple[int, int, int]:
    """Step messages received, all messages received, replies sent (the SuperNode's log)."""
    return (
        log.count("Receiving: train.step"),
        log.count("Receiving: "),
        log.count("Sent successfully"),
    )


def _workers(log: str) -> list[int]:
    return [int(p) for p in re.findall(r"ClientApp worker pid (\d+) started", log)]


def _kill_between_messages(deployment: LocalDeployment, name: str, timeout: float) -> int:
    """SIGKILL ``name``'s worker between two messages of round 1; returns how many step
    messages it had answered."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        steps, received, sent = _counts(deployment.log_text(name))
        assert steps < PER_ROUND, "round 1 ended before the worker could be killed"
        if steps >= 2 and received == sent:
            (pid,) = _workers(deployment.log_text(name))
            os.kill(pid, signal.SIGSTOP)  # it cannot take the next message meanwhile
            if _counts(deployment.log_text(name)) == (steps, received, sent):
                os.kill(pid, signal.SIGKILL)
                return steps
            os.kill(pid, signal.SIGCONT)
        time.sleep(0.02)
    raise AssertionError(f"no moment to kill the worker:\n{deployment.log_text(name)[-3000:]}")


@needs_flower
@pytest.mark.skipif(
    flwr.__version__ != flower_private.TESTED_FLWR, reason="the warm runtime needs flwr 1.41.0"
)
def test_worker_killed_mid_round_drops_its_client_for_that_round(tmp_path):
    deployment = LocalDeployment(tmp_path)
    try:
        deployment.start_superlink()
        for pid in range(2):
            deployment.start_supernode(pid, 2)
        deployment.wait_online(2, timeout=180)
        results = tmp_path / "results"
        results.mkdir()
        with ThreadPoolExecutor(max_workers=1) as pool:
            run = pool.submit(deployment.run, RUN, results, timeout=400)
            answered = _kill_between_messages(deployment, f"supernode-{VICTIM}", timeout=300)
            output = run.result(timeout=420)
        victim_log = deployment.log_text(f"supernode-{VICTIM}")
    finally:
        deployment.stop()
    assert "finished (rounds)" in output, output[-3000:]
    assert "restarting" in victim_log and len(_workers(victim_log)) == 2, victim_log[-3000:]
    assert "RoundStateLost" in output or "lost its in-memory round state" in output, output[-3000:]

    (run_dir,) = [p for p in results.iterdir() if (p / "summary.json").exists()]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [1, 2]
    assert [r["clients"] for r in rows] == [1, 2]  # heads averaged: client 1 back in round 2
    uploads = sorted(
        (int(row["round"]), int(row["client"]))
        for row in csv.DictReader((run_dir / "ledger.csv").open())
        if row["direction"] == "up" and int(row.get("weights", 0) or 0) > 0
    )
    assert uploads == [(1, 0), (2, 0), (2, VICTIM)]

    # the in-process run in which client 1 vanished at its next message (exchange answered+1)
    config = compose(overrides_from_flower(RUN))
    with run_threads(config):
        reference = rounds_for(config)(config, Vanish(config, {answered + 1: VICTIM})).run()
    assert_equals_reference(Path(run_dir), config, reference)
