"""fedadc ServerApp: compose the config, run the split-learning strategy, write results."""

from __future__ import annotations

import logging
from logging import INFO, WARNING
from pathlib import Path

from flwr.app import Context
from flwr.common.logger import log
from flwr.serverapp import Grid, ServerApp

from fedadc.config import to_dict
from fedadc.federated.results import RunDirectory
from strategies.fast_sim import maybe_enable_fast_simulation
from strategies.flower_private import UnsupportedFlowerError, install_fast_pull
from strategies.run_config import run_config
from strategies.split_learning import SplitLearningStrategy

app = ServerApp()


def _log_through_flower() -> None:
    """fedadc logs to the "fedadc" logger; show it where Flower shows its own lines."""
    ours, flower = logging.getLogger("fedadc"), logging.getLogger("flwr")
    ours.setLevel(logging.INFO)
    ours.propagate = False
    ours.handlers = list(flower.handlers)


def _fast_object_pulls() -> None:
    """A reply pulled before its objects waits 1 s (Flower 1.41.0's first retry); make it
    5 ms (private API, version-checked: strategies/flower_private.py). Deployment only: a
    simulation pulls nothing over the network, so there it changes nothing."""
    try:
        install_fast_pull()
    except UnsupportedFlowerError as err:
        log(WARNING, "fast-deploy: %s; using Flower's own object-pull retries", err)


@app.main()
def main(grid: Grid, context: Context) -> None:
    _log_through_flower()
    # default on: shortens flwr 1.41.0's simulation polls (private API; warns on other versions)
    maybe_enable_fast_simulation(grid, requested=bool(context.run_config.get("fast-sim", True)))
    if context.run_config.get("fast-deploy", True):
        _fast_object_pulls()
    run = run_config(context)
    log(INFO, "fedadc run config: %s", to_dict(run))
    resume = str(context.run_config.get("resume", "")).strip()
    results = (
        RunDirectory(Path(resume).expanduser().resolve()) if resume else RunDirectory.create(run)
    )
    log(INFO, "results directory: %s", results.path)
    poll_s = float(context.run_config.get("poll-s", 0.0))
    strategy = SplitLearningStrategy(run, results, poll_s=poll_s if poll_s > 0 else None)
    result = strategy.start(grid, resume=bool(resume))
    log(
        INFO,
        "finished (%s): final test accuracy %.4f; results in %s",
        result.stop_reason,
        result.final_accuracy,
        results.path,
    )
