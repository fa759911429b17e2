"""Per-step timing (fedadc.federated.timing): the split of an exchange into client compute
and transport wait, the fields of a run's metrics and summary, the per-round line, the
report's plot. No wall-time thresholds: the checks compare times from the same clock, or
use a delay the test itself inserted as a lower bound."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time

import pytest
from flwr.app import ConfigRecord, RecordDict

from fedadc.experiment.report import main as report_main
from fedadc.federated import InProcessTransport
from fedadc.federated.lifecycle import run_federated
from fedadc.federated.results import RunDirectory
from fedadc.federated.timing import STEP_FIELDS, StepTiming, summarize
from fedadc.wire.messages import FromClient, ToClient
from strategies.codec import RECORD, decode_from_client
from tests.test_federated import make_run

DELAY_S = 0.02
"""Sleep the test transport adds to every exchange (a lower bound on the wait)."""


def test_an_exchange_splits_into_the_slowest_client_and_the_wait():
    timing = StepTiming()
    timing.exchange(2.0, [0.5, 1.5], steps=2)  # parallel clients: the slowest counts
    timing.exchange(1.0, [5.0, math.nan, -1.0], steps=1)  # capped at elapsed; bad ignored
    timing.exchange(0.5, [], steps=0)  # every client failed: all wait
    assert (timing.client_s, timing.wait_s, timing.steps) == (2.5, 1.0, 3)
    with timing.server():
        pass
    timing.total_s = 6.0
    row = timing.row()
    assert row["step_s"] == 2.0 and row["step_client_s"] == pytest.approx(2.5 / 3)
    assert row["step_wait_s"] == pytest.approx(1.0 / 3) and row["steps"] == 3
    run = summarize([row, {**row, "steps": 1, "step_s": 4.0}, {"round": 3}])  # no timing
    assert run["steps"] == 4 and run["step_s"] == pytest.approx((3 * 2.0 + 4.0) / 4)


def test_a_malformed_compute_time_is_rejected_by_the_codec():
    record = {"partition": 0, "num_examples": 0, "parts": [], "compute_s": "fast"}
    with pytest.raises(ValueError, match="compute_s"):
        decode_from_client(RecordDict({RECORD: ConfigRecord(record)}))
    del record["compute_s"]  # a client that reports nothing: zero, not an error
    assert decode_from_client(RecordDict({RECORD: ConfigRecord(record)})).compute_s == 0.0


class SlowTransport(InProcessTransport):
    """The in-process transport plus a known delay per exchange (a slow network)."""

    exchanges = 0

    def exchange(self, messages: dict[int, ToClient]) -> dict[int, FromClient]:
        self.exchanges += 1
        time.sleep(DELAY_S)
        return super().exchange(messages)


def test_a_run_records_time_per_step_by_component(tmp_path, caplog):
    run = dataclasses.replace(
        make_run(num_clients=2, local_steps=2), results_dir=str(tmp_path), threads=1
    )
    transport = SlowTransport(run)
    directory = RunDirectory.create(run, "timed")
    with caplog.at_level(logging.INFO, logger="fedadc"):
        result = run_federated(run, transport, results=directory)
    exchanges_per_round = transport.exchanges / len(result.history)
    assert exchanges_per_round == 3  # head + step 0, gradient 0 + step 1, gradient 1 + finish
    rows = [
        json.loads(line) for line in (directory.path / "metrics.jsonl").read_text().splitlines()
    ]
    for row in rows:
        assert row["steps"] == 2  # sfl: the local steps of the round
        assert all(row[k] >= 0 for k in STEP_FIELDS)
        assert row["step_client_s"] > 0 and row["step_server_s"] > 0
        parts = row["step_client_s"] + row["step_server_s"] + row["step_wait_s"]
        # nested intervals of one clock: the parts fit in the training phase and cover
        # most of it (what is left is message building and budget bookkeeping)
        assert 0.5 * row["step_s"] <= parts <= row["step_s"] * (1 + 1e-9)
        # the inserted delay is transport, never client or server time
        assert row["step_wait_s"] * row["steps"] >= DELAY_S * exchanges_per_round
    summary = json.loads((directory.path / "summary.json").read_text())
    assert summary["steps"] == 4
    assert summary["step_wait_s"] == pytest.approx(sum(r["step_wait_s"] for r in rows) / 2)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("round ")]
    assert len(lines) == 2 and all("s/step " in line for line in lines)
    assert "(client " in lines[0] and " / server " in lines[0] and " / wait " in lines[0]


def test_the_report_plots_time_per_step_from_metrics(tmp_path):
    from tests.test_experiment import _fake_run

    runs = tmp_path / "runs"
    _fake_run(runs, ["method=identity", "seed=0"], 0.9, 1.0, 1000)  # no timing recorded
    assert report_main([str(runs), "--out", str(tmp_path / "old")]) == 0
    assert not (tmp_path / "old" / "time_per_step.png").exists()  # older runs: no plot
    for seed in (0, 1):
        _fake_run(runs, ["method=adc", "xi=0.1", f"seed={seed}"], 0.8, 0.1, 1000)
    for metrics in runs.glob("adc-*/metrics.jsonl"):
        rows = [json.loads(line) for line in metrics.read_text().splitlines()]
        timed = {"steps": 3, "step_s": 0.4, "step_client_s": 0.2}
        timed |= {"step_server_s": 0.1, "step_wait_s": 0.05}
        metrics.write_text("".join(json.dumps({**r, **timed}) + "\n" for r in rows))
    out = tmp_path / "report"
    assert report_main([str(runs), "--out", str(out)]) == 0
    assert (out / "time_per_step.png").stat().st_size > 1024
    assert "(time_per_step.png)" in (out / "results.md").read_text()
