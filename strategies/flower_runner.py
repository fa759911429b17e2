"""Run sweep configurations as Flower simulations (``flwr run <repo> --stream``), and the
``fedadc-experiment`` command that offers this runner next to the in-process one.

Hydra overrides become Flower's flat run-config keys where one exists (``method``,
``xi``, ``rounds``...) and the free ``overrides`` string otherwise; before starting, the
mapped run config is composed back and must have the sweep's run identity, so a Flower run
can never silently differ from the in-process one. The run config goes through a TOML file
(flwr's ``--run-config`` accepts one), which sidesteps the shell and quoting rules of the
``key=value`` form. The ServerApp writes ``<run dir>/flower/<date>-<method>-s<seed>/``; its
files are moved up into the run directory when the run has finished.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import shlex
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import OverrideType

from fedadc.config import compose
from fedadc.experiment import cli
from fedadc.experiment.expand import PlannedRun
from fedadc.federated.results import RunDirectory, identity
from strategies.launcher import ROOT, LocalSimulation
from strategies.run_config import FLOWER_GROUP_KEYS, FLOWER_KEYS, overrides_from_flower

log = logging.getLogger("fedadc.experiment")

STAGING = "flower"
LOG_FILE = "flower.log"
FLOAT_KEYS = {"xi", "alpha", "budget-epochs", "lr"}
INT_KEYS = {
    "num-clients",
    "rounds",
    "local-steps",
    "steps-per-message",
    "batch-size",
    "split-at",
    "seed",
}
NULL_AS_ZERO = {"budget-epochs", "lr"}
_FLAT_KEY = {hydra: flat for flat, hydra in FLOWER_KEYS.items() if hydra}


def repo_root() -> Path:
    """The Flower app's folder (pyproject.toml with ``[tool.flwr.app]``)."""
    pyproject = ROOT / "pyproject.toml"
    if not pyproject.is_file() or "[tool.flwr.app]" not in pyproject.read_text():
        raise FileNotFoundError(f"no Flower app at {ROOT}: the flower runner needs a checkout")
    return ROOT


def flower_run_config(overrides: Sequence[str]) -> dict[str, bool | int | float | str]:
    """Flat Flower run config for Hydra ``overrides`` (unmapped ones go to ``overrides``).
    ``results_dir`` is dropped: the runner sets ``results-dir`` itself."""
    flat: dict[str, bool | int | float | str] = {}
    extra: list[str] = []
    parsed = OverridesParser.create().parse_overrides(list(overrides))
    for override in parsed:
        key = _FLAT_KEY.get(override.key_or_group)
        if key == "results-dir":
            continue
        simple = override.type == OverrideType.CHANGE and override.package is None
        value = _flat_value(key, override.value()) if simple and key and key not in flat else None
        if value is None:
            extra.append(override.input_line)
        else:
            flat[key] = value  # type: ignore[index]
    if extra:
        flat["overrides"] = shlex.join(extra)
    return flat


def _flat_value(key: str, value: object) -> bool | int | float | str | None:
    """``value`` typed for Flower key ``key``, or None if it cannot be expressed there."""
    if key in FLOWER_GROUP_KEYS:
        return value if isinstance(value, str) else None
    if value is None and key in NULL_AS_ZERO:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if key in FLOAT_KEYS:
        return float(value)
    if key in INT_KEYS and isinstance(value, int):
        return value
    return None


def to_toml(flat: dict[str, bool | int | float | str]) -> str:
    """A flat TOML document (JSON string escapes are valid TOML basic strings)."""
    lines = []
    for key, value in flat.items():
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, (int, float)):
            text = repr(value)
        else:
            text = json.dumps(value)
        lines.append(f"{key} = {text}")
    return "\n".join(lines) + "\n"


class FlowerRunner:
    """A sweep :data:`fedadc.experiment.sweep.Runner` over one private local SuperLink.

    Args:
        simulation: the launcher (its FLWR_HOME and ports) every run of the sweep uses.
        federation_config: extra ``--federation-config`` items, e.g.
            ``client-resources-num-cpus=1``.
        timeout_s: per ``flwr run`` (None: no limit).
    """

    def __init__(
        self,
        simulation: LocalSimulation,
        federation_config: str = "",
        timeout_s: float | None = None,
    ) -> None:
        self.simulation = simulation
        self.federation_config = federation_config
        self.timeout_s = timeout_s

    def __call__(self, planned: PlannedRun, results: RunDirectory, resume: bool) -> None:
        """Run ``planned`` with ``flwr run`` into ``results`` (already holding config.json).
        An interrupted Flower run resumes from its staging directory's checkpoint."""
        path, run = results.path, planned.run
        staging = path / STAGING
        flat = flower_run_config(planned.overrides)
        flat["results-dir"] = str(staging)
        if identity(compose(overrides_from_flower(flat))) != identity(run):
            raise ValueError(f"the Flower run config {flat} does not compose to the sweep's run")
        interrupted = _newest(staging, finished=False)
        if interrupted is not None:
            flat["resume"] = str(interrupted)
            log.info("resuming %s from %s", path.name, interrupted.name)
        staging.mkdir(parents=True, exist_ok=True)
        toml = path / "flower-run-config.toml"
        toml.write_text(to_toml(flat))
        federation = f"num-supernodes={run.federation.num_clients} {self.federation_config}"
        with open(path / LOG_FILE, "a") as out:
            command = self.simulation.command(repo_root(), toml, federation.strip())
            out.write("$ " + shlex.join(command) + "\n")
            out.flush()
            proc = self.simulation.run(
                repo_root(),
                toml,
                federation.strip(),
                timeout=self.timeout_s,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        finished = _newest(staging, finished=True)
        if proc.returncode != 0 or finished is None:
            tail = (path / LOG_FILE).read_text()[-3000:]
            raise RuntimeError(f"flwr run failed (exit {proc.returncode}) for {path}:\n{tail}")
        for item in finished.iterdir():
            if item.name != "config.json":  # ours is the same run (checked above)
                shutil.move(str(item), str(path / item.name))
        shutil.rmtree(staging)


def _newest(staging: Path, *, finished: bool) -> Path | None:
    """The newest ServerApp directory in ``staging`` with a summary (``finished``) or with
    a checkpoint and no summary."""
    if not staging.is_dir():
        return None
    done = [d for d in staging.iterdir() if (d / "summary.json").is_file()]
    found = (
        done
        if finished
        else [d for d in staging.iterdir() if (d / "checkpoint.pt").is_file() and d not in done]
    )
    return max(found, key=lambda d: d.stat().st_mtime) if found else None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The sweep command's options for ``--runner flower``."""
    parser.add_argument(
        "--flwr-home", type=Path, help="FLWR_HOME for --runner flower (default <out>/.flwr-home)"
    )
    parser.add_argument(
        "--federation-config",
        # one CPU per simulated ClientApp, what it uses (conf/config.yaml threads: 1);
        # Flower's default of 2 runs the clients one after another on 2 cores (docs/flower.md)
        default="client-resources-num-cpus=1",
        help="extra flwr --federation-config items (default: 'client-resources-num-cpus=1')",
    )


@contextlib.contextmanager
def flower_runner(args: argparse.Namespace, out: Path) -> Iterator[FlowerRunner]:
    """One private SuperLink for the whole sweep, stopped at its end."""
    simulation = LocalSimulation(args.flwr_home or out / ".flwr-home")
    try:
        yield FlowerRunner(simulation, args.federation_config)
    finally:
        simulation.stop()


def main(argv: list[str] | None = None) -> int:
    """``fedadc-experiment``: the sweep command with ``--runner reference|flower``."""
    runners = {**cli.REFERENCE, "flower": flower_runner}
    return cli.main(argv, runners=runners, add_arguments=add_arguments)


if __name__ == "__main__":
    raise SystemExit(main())
