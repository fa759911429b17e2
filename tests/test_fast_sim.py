"""Fast simulation (strategies/fast_sim.py), the default: the explicit call is loud on other
flwr versions, the ServerApp's call warns and leaves Flower alone there and in deployment; it
works on a running engine thread. That it changes no result is shown by a real `flwr run` with
each setting in tests/test_flower_app.py."""

from __future__ import annotations

import logging
import threading
import time

import flwr
import pytest
from flwr.server.superlink.fleet.vce import vce_api
from flwr.superlink.grid.inmemory_grid import InMemoryGrid

from strategies import fast_sim
from strategies.fast_sim import enable_fast_simulation, maybe_enable_fast_simulation


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


def _simulation_grid() -> InMemoryGrid:
    grid = InMemoryGrid.__new__(InMemoryGrid)  # no LinkState needed: only its interval is set
    grid.pull_interval = 0.1
    return grid


def test_default_call_warns_and_patches_nothing_on_other_flwr(monkeypatch, restore_flower, caplog):
    original, defaults = vce_api.add_messages_to_queue, InMemoryGrid.__init__.__defaults__
    monkeypatch.setattr(flwr, "__version__", "1.42.0")
    grid = _simulation_grid()
    with caplog.at_level(logging.WARNING):
        assert maybe_enable_fast_simulation(grid, requested=True) is False
    assert vce_api.add_messages_to_queue is original
    assert InMemoryGrid.__init__.__defaults__ == defaults and grid.pull_interval == 0.1
    (record,) = [r for r in caplog.records if "fast-sim" in r.getMessage()]
    assert record.levelno == logging.WARNING
    text = record.getMessage()
    assert "installed: flwr 1.42.0" in text
    assert "stock simulation polling is used" in text
    assert "set fast-sim=false in the run config to silence this warning" in text


def test_default_call_leaves_a_deployment_grid_alone(restore_flower, caplog):
    class GrpcGrid:  # stands for any grid that is not Flower's in-memory one
        pull_interval = 0.1

    original, defaults = vce_api.add_messages_to_queue, InMemoryGrid.__init__.__defaults__
    grid = GrpcGrid()
    with caplog.at_level(logging.DEBUG):
        assert maybe_enable_fast_simulation(grid, requested=True) is False
    assert vce_api.add_messages_to_queue is original
    assert InMemoryGrid.__init__.__defaults__ == defaults and grid.pull_interval == 0.1
    assert "fast-sim" not in caplog.text


def test_default_call_patches_a_simulation_grid_unless_turned_off(restore_flower):
    grid = _simulation_grid()
    assert maybe_enable_fast_simulation(grid, requested=False) is False
    assert grid.pull_interval == 0.1
    assert maybe_enable_fast_simulation(grid, requested=True) is True
    assert grid.pull_interval == 0.002
    assert vce_api.add_messages_to_queue is fast_sim._fast_add_messages_to_queue


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
    grid = _simulation_grid()
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


# A real `flwr run` with and without fast-sim equals the in-process reference bit for bit:
# tests/test_flower_app.py::test_flower_simulation_equals_the_in_process_reference.
