"""Run one configuration of a sweep into a deterministic, resumable run directory.

The directory name is derived from the resolved configuration (readable part: method, its
ratio, partition, seed; then a hash of the whole config), so the same configuration always
lands in the same place however its overrides were spelled, and a changed default yields a
new directory instead of silently reusing stale results. A directory with ``summary.json``
is finished and skipped; one with only ``checkpoint.pt`` is resumed from it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
import time
from collections.abc import Sequence
from pathlib import Path

from fedadc.config import RunConfig, compose, to_dict
from fedadc.experiment.expand import IGNORED_FOR_IDENTITY, PlannedRun, config_identity

log = logging.getLogger("fedadc.experiment")

RUNNERS = ("reference", "flower")
RATIO_TAGS = {
    "xi": "xi",
    "ratio": "r",
    "group_size": "R",
    "bits": "b",
    "batch_ratio": "tb",
    "token_ratio": "kn",
}
"""Method parameters that carry the compression ratio -> their short tag in run names."""
PARTIAL_FILES = ("metrics.jsonl", "ledger.csv", "accuracy_vs_bytes.png", "checkpoint.pt.tmp")
_UNSAFE = re.compile(r"[^A-Za-z0-9._+\-]")


def run_name(run: RunConfig) -> str:
    """``<method>[-<ratio tags>][-<partition>]-s<seed>-<hash>``, e.g.
    ``adc-xi0.1-dirichlet0.5-s0-3f2a9c1e`` (no partition with one client); the hash covers
    the resolved config but :data:`IGNORED_FOR_IDENTITY` (results dir, device)."""
    parts = [run.method.name]
    for key, tag in RATIO_TAGS.items():
        value = run.method.params.get(key)
        if value is not None:
            parts.append(f"{tag}{value:g}" if isinstance(value, (int, float)) else f"{tag}{value}")
    if run.federation.num_clients > 1:  # one client holds everything: no partition
        partition = run.partition.kind
        if partition == "dirichlet":
            partition += f"{run.partition.alpha:g}"
        parts.append(partition)
    digest = hashlib.sha1(config_identity(run).encode()).hexdigest()[:8]
    parts += [f"s{run.seed}", digest]
    return _UNSAFE.sub("_", "-".join(parts))


def read_summary(path: Path) -> dict | None:
    """The run's summary, or None while it is unfinished."""
    file = path / "summary.json"
    return json.loads(file.read_text()) if file.is_file() else None


def run_experiment(
    overrides: Sequence[str],
    *,
    runner: str = "reference",
    out_root: Path,
    progress: str = "",
    **runner_options: object,
) -> Path:
    """Compose ``overrides``, run them under ``out_root`` unless already finished; returns
    the run directory. ``runner``: ``reference`` (in-process) or ``flower`` (``flwr run``
    simulation; options ``flwr_home``, ``ports``, ``federation_config``, ``timeout_s``
    of :func:`fedadc.experiment.flower_runner.run_flower`)."""
    planned = PlannedRun(tuple(overrides), compose(list(overrides)))
    return run_planned(
        planned, runner=runner, out_root=out_root, progress=progress, **runner_options
    )


def run_planned(
    planned: PlannedRun,
    *,
    runner: str = "reference",
    out_root: Path,
    progress: str = "",
    **runner_options: object,
) -> Path:
    """:func:`run_experiment` for an already composed run (the sweep composes them all first)."""
    if runner not in RUNNERS:
        raise ValueError(f"runner must be one of {list(RUNNERS)}, got {runner!r}")
    out_root = Path(out_root).expanduser().resolve()
    run = dataclasses.replace(planned.run, results_dir=str(out_root))
    path = out_root / run_name(run)
    prefix = f"{progress} " if progress else ""
    done = read_summary(path)
    if done is not None:
        log.info("%sskipped %s (done: final accuracy %.4f)", prefix, path.name, _acc(done))
        return path
    log.info("%sstart %s", prefix, path.name)
    started = time.perf_counter()
    resume = prepare_run_dir(run, path)
    if runner == "reference":
        _run_reference(run, path, resume)
    else:
        from fedadc.experiment.flower_runner import run_flower

        run_flower(planned.overrides, run, path, **runner_options)  # type: ignore[arg-type]
    summary = read_summary(path)
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


def saved_config(run: RunConfig) -> dict:
    """The resolved config as config.json records it (JSON round trip)."""
    return json.loads(json.dumps(to_dict(run), default=str))


def prepare_run_dir(run: RunConfig, path: Path) -> bool:
    """Create ``path`` with config.json, or check an unfinished one; True if it holds a
    checkpoint to resume from. Partial files of a run killed before its first checkpoint
    are removed so that it starts clean."""
    config_file = path / "config.json"
    if config_file.is_file():
        theirs = json.loads(config_file.read_text())
        ours = saved_config(run)
        for key in IGNORED_FOR_IDENTITY:
            theirs.pop(key, None)
            ours.pop(key, None)
        if theirs != ours:
            raise ValueError(f"{path} holds a different configuration; move it away")
        if (path / "checkpoint.pt").is_file():
            return True
        for name in PARTIAL_FILES:
            (path / name).unlink(missing_ok=True)
    path.mkdir(parents=True, exist_ok=True)
    config_file.write_text(json.dumps(to_dict(run), indent=2, default=str))
    return False


def truncate_metrics(path: Path) -> int:
    """Drop metrics.jsonl rows after the checkpoint's round (a kill between writing a row
    and the checkpoint would otherwise repeat it on resume); returns that round."""
    import torch

    state = torch.load(path / "checkpoint.pt", map_location="cpu", weights_only=False)
    last = int(state["round"])
    metrics = path / "metrics.jsonl"
    if metrics.is_file():
        rows = [line for line in metrics.read_text().splitlines() if line.strip()]
        kept = [line for line in rows if json.loads(line)["round"] <= last]
        metrics.write_text("".join(line + "\n" for line in kept))
    return last


def _run_reference(run: RunConfig, path: Path, resume: bool) -> None:
    from fedadc.federated.results import RunDirectory
    from fedadc.train.reference import train_reference

    if resume:
        last = truncate_metrics(path)
        log.info("resuming %s after round %d", path.name, last)
    train_reference(run, results=RunDirectory(path), resume=resume)
