"""``fedadc-experiment`` / ``python -m fedadc.experiment``: run a sweep, skipping done runs.

fedadc-experiment experiment=digits_quick                 # conf/experiment/digits_quick.yaml
fedadc-experiment experiment=digits_quick seed=0 --dry-run
fedadc-experiment -m method=adc,topk xi=0.05,0.1 federation.rounds=5
fedadc-experiment experiment=paper_cifar100_deit_tiny device=cuda --out /data/exp/cifar

An experiment file's ``sweep:`` always expands; command-line comma lists expand only with
``-m/--multirun`` (Hydra's rule, so a stray comma never starts a sweep by accident).

``python -m fedadc.experiment`` knows the in-process runner only; the ``fedadc-experiment``
command (``strategies/flower_runner.py``) adds ``--runner flower``.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path

from fedadc.experiment.sweep import Runner, run_reference

log = logging.getLogger("fedadc.experiment")

DEFAULT_ROOT = Path("~/fedadc-experiments")

RunnerFactory = Callable[[argparse.Namespace, Path], AbstractContextManager[Runner]]
"""Parsed arguments and the output root -> a runner for the whole sweep (its context
holds what the runner shares between runs, e.g. one local server for all of them)."""


def _reference(args: argparse.Namespace, out: Path) -> AbstractContextManager[Runner]:
    return contextlib.nullcontext(run_reference)


REFERENCE: dict[str, RunnerFactory] = {"reference": _reference}


def build_parser(
    runners: Sequence[str] = tuple(REFERENCE),
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fedadc-experiment",
        description="Run a sweep of fedadc runs (resumable: finished runs are skipped). "
        "Arguments are Hydra overrides; experiment=<name> loads conf/experiment/<name>.yaml.",
    )
    parser.add_argument("overrides", nargs="*", help="experiment=<name> and Hydra overrides")
    parser.add_argument(
        "-m", "--multirun", action="store_true", help="expand command-line comma lists"
    )
    parser.add_argument("--runner", choices=tuple(runners), default=runners[0])
    parser.add_argument(
        "--out", type=Path, help="output root (default ~/fedadc-experiments/<experiment>)"
    )
    parser.add_argument("--dry-run", action="store_true", help="list the runs and exit")
    parser.add_argument("-v", "--verbose", action="store_true", help="show per-round lines")
    parser.add_argument("--fail-fast", action="store_true", help="stop at the first failure")
    if add_arguments is not None:
        add_arguments(parser)
    return parser


def main(
    argv: list[str] | None = None,
    *,
    runners: Mapping[str, RunnerFactory] = REFERENCE,
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
) -> int:
    """The sweep command with ``runners`` to choose from (``--runner``)."""
    args = build_parser(tuple(runners), add_arguments).parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stdout)
    logging.getLogger("fedadc").setLevel(logging.INFO if args.verbose else logging.WARNING)
    log.setLevel(logging.DEBUG if args.verbose else logging.INFO)

    from fedadc.experiment.expand import has_sweep, load_experiment, plan, split_experiment

    try:
        name, overrides = split_experiment(args.overrides)
        if has_sweep(overrides) and not args.multirun:
            raise ValueError("comma lists on the command line sweep only with -m/--multirun")
        experiment = load_experiment(name) if name else None
        runs, duplicates = plan(experiment, overrides)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = (args.out or DEFAULT_ROOT / (experiment.name if experiment else "adhoc")).expanduser()
    out = out.resolve()
    dropped = f" ({duplicates} duplicate configurations dropped)" if duplicates else ""
    print(f"{len(runs)} runs{dropped} -> {out}")
    if args.dry_run:
        _list(runs, out)
        return 0
    return _run_all(runs, out, args, runners[args.runner])


def _list(runs: list, out: Path) -> None:
    from fedadc.federated.results import run_name

    for i, planned in enumerate(runs, 1):
        path = out / run_name(planned.run)
        state = (
            "done" if (path / "summary.json").exists() else "partial" if path.exists() else "todo"
        )
        print(f"[{i}/{len(runs)}] {state:7s} {path.name}  {' '.join(planned.overrides)}")


def _run_all(runs: list, out: Path, args: argparse.Namespace, factory: RunnerFactory) -> int:
    from fedadc.experiment.sweep import run_planned

    failed = []
    with factory(args, out) as runner:
        for i, planned in enumerate(runs, 1):
            progress = f"[{i}/{len(runs)}]"
            try:
                run_planned(planned, runner=runner, out_root=out, progress=progress)
            except Exception as err:  # one failed run must not end a days-long sweep
                log.error("%s failed: %s: %s", progress, " ".join(planned.overrides), err)
                log.debug("traceback", exc_info=True)
                failed.append(planned)
                if args.fail_fast:
                    break
    print(f"{len(runs) - len(failed)} of {len(runs)} runs finished; report: fedadc-report {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
