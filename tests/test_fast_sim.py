"""Opt-in fast simulation (strategies/fast_sim.py): loud on other flwr versions, effective on
a running engine thread, and without effect on results (a real `flwr run`, both settings)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import flwr
import pytest
import torch
from flwr.server.superlink.fleet.vce import vce_api
from flwr.superlink.grid.inmemory_grid import InMemoryGrid

from strategies import fast_sim
from strategies.fast_sim import enable_fast_simulation

ROOT = Path(__file__).parents[1]
# 2 clients, not 3: FederatedServer.fedavg sums the heads in reply-arrival order, and a sum of
# 3 floats depends on its order (1-ulp differences seen between two runs with 3 clients); with
# 2 it does not (a + b == b + a), so the runs below can be compared bit for bit.
FLAT = {
    "rounds": 2,
    "num-clients": 2,
    "local-steps": 3,
    "batch-size": 16,
    "seed": 7,
    "overrides": "model.kwargs.embed_dim=32 model.kwargs.depth=4 model.split_at=2 threads=1",
}


@pytest.fixture
def restore_flower(monkeypatch):
    """Whatever enable_fast_simulation patches is put back after the test."""
    monkeypatch.setattr(vce_api, "add_messages_to_queue", vce_api.add_messages_to_queue)
    monkeypatch.setattr(InMemoryGrid.__init__, "__defaults__", InMemoryGrid.__init__.__defaults__)
    monkeypatch.setitem(fast_sim._state, "interval_s", None)
    monkeypatch.setitem(fast_sim._state, "original", None)


def test_other_flwr_version_fails_clearly(monkeypatch, restore_flower):
    original = vce_api.add_messages_to_queue
    monkeypatch.setattr(flwr, "__version__", "1.42.0")
    with pytest.raises(RuntimeError, match=r"supports only flwr 1\.41\.0; set fast-sim=false"):
        enable_fast_simulation()
    assert vce_api.add_messages_to_queue is original  # nothing patched


def test_missing_private_name_fails_clearly(monkeypatch, restore_flower):
    monkeypatch.delattr(vce_api, "add_messages_to_queue")
    with pytest.raises(RuntimeError, match=r"set fast-sim=false.*add_messages_to_queue"):
        enable_fast_simulation()


class _EmptyState:
    def __init__(self) -> None:
        self.polls = 0

    def get_message_ins(self, node_id: int, limit: int | None) -> list:
        self.polls += 1
        return []


def _polls_in(state: _EmptyState, seconds: float) -> int:
    before = state.polls
    time.sleep(seconds)
    return state.polls - before


def test_patches_the_grid_and_both_engine_extractors(restore_flower):
    """A running extractor (original code) and one started later both poll every 2 ms."""
    from queue import Queue

    stop = threading.Event()
    running = _EmptyState()
    thread = threading.Thread(
        target=vce_api.add_messages_to_queue, args=(running, Queue(), {1: 0}, stop)
    )
    thread.start()
    grid = InMemoryGrid.__new__(InMemoryGrid)
    grid.pull_interval = 0.1
    started: threading.Thread | None = None
    try:
        assert _polls_in(running, 0.5) <= 7  # one poll per 0.1 s
        enable_fast_simulation(0.002, grid=grid)
        assert _polls_in(running, 0.5) >= 40
        later = _EmptyState()
        started = threading.Thread(
            target=vce_api.add_messages_to_queue, args=(later, Queue(), {1: 0}, stop)
        )
        started.start()
        assert _polls_in(later, 0.5) >= 40
    finally:
        stop.set()
        thread.join()
        if started is not None:
            started.join()
    assert grid.pull_interval == 0.002
    assert InMemoryGrid.__init__.__defaults__[-1] == 0.002


# ------------------------------------------------------------------ a real `flwr run`
def _free_ports() -> tuple[int, int]:
    """Two distinct free local ports (both bound at once, then released)."""
    with socket.socket() as a, socket.socket() as b:
        a.bind(("127.0.0.1", 0))
        b.bind(("127.0.0.1", 0))
        return a.getsockname()[1], b.getsockname()[1]


def _flower_run(home: Path, results: Path, fast: bool, ports: tuple[int, int]) -> tuple[Path, str]:
    run_config = (
        " ".join(f"{k}={json.dumps(v) if isinstance(v, str) else v}" for k, v in FLAT.items())
        + f' results-dir="{results}" fast-sim={str(fast).lower()}'
    )
    env = {
        **os.environ,
        "FLWR_HOME": str(home),
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        # `flwr run` reuses any local SuperLink on the default ports (39091, 39093), also one
        # of another FLWR_HOME; private ports make it start and use this test's own
        "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(ports[0]),
        "FLWR_LOCAL_CONTROL_API_PORT": str(ports[1]),
    }
    proc = subprocess.run(
        [
            "flwr",
            "run",
            str(ROOT),
            "--stream",
            "--run-config",
            run_config,
            "--federation-config",
            "num-supernodes=2 client-resources-num-cpus=2",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    runs = [p for p in results.iterdir() if (p / "summary.json").exists()]
    assert len(runs) == 1, proc.stdout[-3000:]
    return runs[0], proc.stdout


@pytest.mark.skipif(shutil.which("flwr") is None, reason="flwr CLI not installed")
def test_fast_sim_changes_no_result(tmp_path):
    home = tmp_path / "flwr-home"  # one private SuperLink for both runs
    home.mkdir()
    ports = _free_ports()
    try:
        out = {}
        for fast in (False, True):
            results = tmp_path / f"fast-{fast}"
            results.mkdir()
            out[fast] = _flower_run(home, results, fast, ports)
    finally:
        subprocess.run(["pkill", "-f", str(home)], check=False)
    assert "fast-sim: Flower's simulation poll waits set to 0.002 s" in out[True][1]
    assert "fast-sim:" not in out[False][1]
    summaries = [json.loads((out[f][0] / "summary.json").read_text()) for f in (False, True)]
    for s in summaries:
        s.pop("wall_s")  # the only field that may differ
    assert summaries[0] == summaries[1]
    slow, fast = (
        torch.load(out[f][0] / "checkpoint.pt", weights_only=False) for f in (False, True)
    )
    assert slow["global_head"] == fast["global_head"]  # payload bytes, exactly
    for key, value in slow["tail"].items():
        assert torch.equal(value, fast["tail"][key]), key
    assert [r["test_accuracy"] for r in slow["history"]] == [
        r["test_accuracy"] for r in fast["history"]
    ]
