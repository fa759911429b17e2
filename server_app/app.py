"""fedadc ServerApp: compose the config, run the split-learning strategy, write results."""

from __future__ import annotations

import logging
from logging import INFO
from pathlib import Path

from flwr.app import Context
from flwr.common.logger import log
from flwr.serverapp import Grid, ServerApp

from fedadc.config import to_dict
from fedadc.federated.results import RunDirectory
from strategies.fast_sim import maybe_enable_fast_simulation
from strategies.run_config import run_config
from strategies.split_learning import SplitLearningStrategy

app = ServerApp()


def _log_through_flower() -> None:
    """fedadc logs to the "fedadc" logger; show it where Flower shows its own lines."""
    ours, flower = logging.getLogger("fedadc"), logging.getLogger("flwr")
    ours.setLevel(logging.INFO)
    ours.propagate = False
    ours.handlers = list(flower.handlers)


@app.main()
def main(grid: Grid, context: Context) -> None:
    _log_through_flower()
    # default on: shortens flwr 1.41.0's simulation polls (private API; warns on other versions)
    maybe_enable_fast_simulation(grid, requested=bool(context.run_config.get("fast-sim", True)))
    run = run_config(context)
    log(INFO, "fedadc run config: %s", to_dict(run))
    resume = str(context.run_config.get("resume", "")).strip()
    results = (
        RunDirectory(Path(resume).expanduser().resolve()) if resume else RunDirectory.create(run)
    )
    log(INFO, "results directory: %s", results.path)
    result = SplitLearningStrategy(run, results).start(grid, resume=bool(resume))
    log(
        INFO,
        "finished (%s): final test accuracy %.4f; results in %s",
        result.stop_reason,
        result.final_accuracy,
        results.path,
    )
