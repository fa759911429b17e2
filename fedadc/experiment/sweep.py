"""Run one configuration of a sweep into a deterministic, resumable run directory.

The directory name is :func:`fedadc.federated.results.run_name` (readable part: method, its
ratio, partition, seed; then a hash of the run's identity), so the same run always lands in
the same place however its overrides were spelled or wherever it executes, and a changed
default yields a new directory instead of silently reusing stale results. A directory with
``summary.json`` is finished and skipped; one with ``checkpoint.pt`` is resumed from it.

What executes a run is the caller's choice, a :data:`Runner`: :func:`run_reference` here
(in-process), or the Flower layer's ``flwr run`` runner (``strategies/flower_runner.py``).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from fedadc.config import compose
from fedadc.experiment.expand import PlannedRun
from fedadc.federated.reference import train_reference
from fedadc.federated.results import RunDirectory, run_name

log = logging.getLogger("fedadc.experiment")

Runner = Callable[[PlannedRun, RunDirectory, bool], None]
"""Executes ``planned`` into the prepared directory, resuming from its checkpoint when the
flag says so; it must leave ``summary.json`` there."""


def run_reference(planned: PlannedRun, results: RunDirectory, resume: bool) -> None:
    """The in-process runner."""
    train_reference(planned.run, results=results, resume=resume)


def run_experiment(
    overrides: Sequence[str],
    *,
    runner: Runner = run_reference,
    out_root: Path,
    progress: str = "",
) -> Path:
    """Compose ``overrides``, run them under ``out_root`` unless already finished; returns
    the run directory."""
    planned = PlannedRun(tuple(overrides), compose(list(overrides)))
    return run_planned(planned, runner=runner, out_root=out_root, progress=progress)


def run_planned(
    planned: PlannedRun,
    *,
    runner: Runner = run_reference,
    out_root: Path,
    progress: str = "",
) -> Path:
    """:func:`run_experiment` for an already composed run (the sweep composes them all first)."""
    out_root = Path(out_root).expanduser().resolve()
    run = dataclasses.replace(planned.run, results_dir=str(out_root))
    planned = dataclasses.replace(planned, run=run)
    path = out_root / run_name(run)
    prefix = f"{progress} " if progress else ""
    done = RunDirectory(path).summary()
    if done is not None:
        log.info("%sskipped %s (done: final accuracy %.4f)", prefix, path.name, _acc(done))
        return path
    log.info("%sstart %s", prefix, path.name)
    started = time.perf_counter()
    results, resume = RunDirectory.prepare(run, path)
    if resume:
        log.info("%sresuming %s from its checkpoint", prefix, path.name)
    runner(planned, results, resume)
    summary = results.summary()
    if summary is None:
        raise RuntimeError(f"run {path} ended without summary.json")
    log.info(
        "%sdone %s: final accuracy %.4f (%s after %s rounds) in %.0f s",
        prefix,
        path.name,
        _acc(summary),
        summary.get("stop_reason"),
        summary.get("rounds"),
        time.perf_counter() - started,
    )
    return path


def _acc(summary: dict) -> float:
    return float(summary.get("final_accuracy", float("nan")))
