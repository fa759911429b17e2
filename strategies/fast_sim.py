"""Fast simulation: shorten Flower 1.41.0's two 0.1 s poll waits (private API).

The ServerApp calls :func:`maybe_enable_fast_simulation` on every run (``fast-sim = true``
is the default run config): on flwr 1.41.0 in simulation it patches; on another flwr version
it warns and Flower's stock polling is used; in deployment it does nothing.

In simulation a request/reply costs about 100 ms whatever its size, because of two waits
(docs: /work/shared/docs/flower-notes.md):

* server side, ``InMemoryGrid.send_and_receive`` sleeps ``pull_interval`` (0.1 s) between
  pulls of the replies;
* engine side, the extractor thread ``vce_api.add_messages_to_queue`` takes at most one
  message per node from the LinkState, then waits ``f_stop.wait(0.1)``.

When to patch: under ``flwr run`` (and ``run_simulation``) the ServerApp runs in a thread of
the same process as the engine. ``_main_loop`` builds the grid, starts the ServerApp thread
and then the engine, whose ``run_api`` starts the extractor thread only after the Ray
backend is built (seconds). So when the ServerApp's ``main`` calls this function, the grid
already exists (its instance is patched: pass ``grid``) and the extractor has usually not
started yet: replacing the module global ``vce_api.add_messages_to_queue`` is enough,
because ``run_api`` looks the name up when it creates the thread. If the extractor is
already running (found among ``threading.enumerate()`` by its target), its loop is patched
through the one object it consults on every turn: its stop event's ``wait`` is replaced on
that instance by one that caps the 0.1 s timeout at ``interval_s``.

Only messages' timing changes; their order and content do not, so a run's results are
unchanged (tests/test_fast_sim.py). The clean fix is a configurable interval upstream.
"""

from __future__ import annotations

import inspect
import threading
from logging import INFO, WARNING
from typing import Any

import flwr
from flwr.common.logger import log

SIMULATION_GRID = "InMemoryGrid"  # matched by name: the class is private and may move

SUPPORTED_FLWR = "1.41.0"
UNSUPPORTED = (
    "fast-sim patches private Flower internals and supports only flwr 1.41.0; set fast-sim=false"
)
_ENGINE_WAIT_S = 0.1  # the literal in vce_api.add_messages_to_queue (flwr 1.41.0)
_state: dict[str, Any] = {"interval_s": None, "original": None}


def _internals() -> tuple[Any, type]:
    """The engine module and the grid class, after checking version and names."""
    version = getattr(flwr, "__version__", "unknown")
    if version != SUPPORTED_FLWR:
        raise RuntimeError(f"{UNSUPPORTED} (installed: flwr {version})")
    try:
        from flwr.server.superlink.fleet.vce import vce_api
        from flwr.superlink.grid.inmemory_grid import InMemoryGrid
    except ImportError as ex:
        raise RuntimeError(f"{UNSUPPORTED} ({ex})") from ex
    missing = [
        name
        for name, ok in (
            (
                "vce_api.add_messages_to_queue",
                callable(getattr(vce_api, "add_messages_to_queue", 0)),
            ),
            ("vce_api.run_api", callable(getattr(vce_api, "run_api", None))),
            ("InMemoryGrid.send_and_receive", hasattr(InMemoryGrid, "send_and_receive")),
            (
                "InMemoryGrid.__init__(..., pull_interval=...)",
                list(inspect.signature(InMemoryGrid.__init__).parameters)[-1] == "pull_interval",
            ),
        )
        if not ok
    ]
    if missing:
        raise RuntimeError(f"{UNSUPPORTED} (missing: {', '.join(missing)})")
    return vce_api, InMemoryGrid


def _fast_add_messages_to_queue(state: Any, queue: Any, nodes_mapping: Any, f_stop: Any) -> None:
    """``vce_api.add_messages_to_queue`` of flwr 1.41.0 with a shorter wait."""
    while not f_stop.is_set():
        for node_id in nodes_mapping:
            for msg in state.get_message_ins(node_id=node_id, limit=1):
                queue.put(msg)
        f_stop.wait(_state["interval_s"])


def _cap_event_wait(event: threading.Event) -> None:
    """Make ``event.wait(0.1)`` (the running extractor's wait) return after interval_s."""
    if getattr(event.wait, "_fedadc_fast_sim", False):
        return
    bound = threading.Event.wait.__get__(event)

    def wait(timeout: float | None = None) -> bool:
        if timeout == _ENGINE_WAIT_S:
            timeout = _state["interval_s"]
        return bound(timeout)

    wait._fedadc_fast_sim = True  # type: ignore[attr-defined]
    event.wait = wait  # type: ignore[method-assign]


def enable_fast_simulation(interval_s: float = 0.002, grid: Any = None) -> None:
    """Shorten Flower's simulation poll waits from 0.1 s to ``interval_s`` (flwr 1.41.0 only).

    Args:
        interval_s: the new wait of both loops, in seconds.
        grid: the ServerApp's grid; an ``InMemoryGrid`` gets ``pull_interval = interval_s``
            (grids created later get it as their default). Any other grid (deployment) is
            left alone, with a warning.

    Raises:
        RuntimeError: another flwr version is installed or a patched name is missing.
    """
    if not 0 < interval_s <= _ENGINE_WAIT_S:
        raise ValueError(f"interval_s must be in (0, {_ENGINE_WAIT_S}], got {interval_s}")
    vce_api, grid_cls = _internals()
    _state["interval_s"] = interval_s
    # --- the engine's extractor: threads not started yet --------------------------------
    if vce_api.add_messages_to_queue is not _fast_add_messages_to_queue:
        _state["original"] = vce_api.add_messages_to_queue
        vce_api.add_messages_to_queue = _fast_add_messages_to_queue
    # --- the engine's extractor: a thread already running ---------------------------------
    running = 0
    for thread in threading.enumerate():
        if getattr(thread, "_target", None) is _state["original"]:
            _cap_event_wait(thread._args[3])  # type: ignore[attr-defined]  # (.., f_stop)
            running += 1
    # --- the grid -------------------------------------------------------------------------
    defaults = list(grid_cls.__init__.__defaults__ or ())
    if defaults:
        defaults[-1] = interval_s  # pull_interval is the last parameter with a default
        grid_cls.__init__.__defaults__ = tuple(defaults)
    if isinstance(grid, grid_cls):
        grid.pull_interval = interval_s
    elif grid is not None:
        log(WARNING, "fast-sim: %s is not a simulation grid; nothing to speed up", type(grid))
    log(
        INFO,
        "fast-sim: Flower's simulation poll waits set to %.3f s (%s)",
        interval_s,
        f"patched {running} running extractor thread(s)" if running else "before engine start",
    )


def is_simulation_grid(grid: Any) -> bool:
    """Whether ``grid`` is Flower's in-memory (simulation) grid, on any flwr version."""
    return any(cls.__name__ == SIMULATION_GRID for cls in type(grid).__mro__)


def maybe_enable_fast_simulation(
    grid: Any, requested: bool = True, interval_s: float = 0.002
) -> bool:
    """Speed up a simulation where it is safe; never fail a run for it.

    Patches (:func:`enable_fast_simulation`) only when ``requested`` and ``grid`` is a
    simulation grid. On another flwr version, or when a patched private name is missing, it
    logs a WARNING and Flower's stock polling (about 0.1 s per exchange) is used. In
    deployment (any other grid) it does nothing: there is nothing of this kind to shorten.

    Returns:
        True when Flower was patched.
    """
    if not requested or not is_simulation_grid(grid):
        return False
    try:
        enable_fast_simulation(interval_s, grid=grid)
    except RuntimeError as ex:
        log(
            WARNING,
            "fast-sim not applied: %s. Flower's stock simulation polling is used (about 0.1 s "
            "per exchange, results unchanged); set fast-sim=false in the run config to "
            "silence this warning.",
            ex,
        )
        return False
    return True
