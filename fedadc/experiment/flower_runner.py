"""Run one sweep configuration as a Flower simulation (``flwr run <repo> --stream``).

Hydra overrides become Flower's flat run-config keys where one exists (``method``,
``xi``, ``rounds``...) and the free ``overrides`` string otherwise; before starting, the
mapped run config is composed back and must equal the sweep's RunConfig, so a Flower run
can never silently differ from the in-process one. The run config goes through a TOML file
(flwr's ``--run-config`` accepts one), which sidesteps the shell and quoting rules of the
``key=value`` form. The ServerApp writes ``<run dir>/flower/<date>-<method>-s<seed>/``; its
files are moved up into the run directory when the run has finished.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import OverrideType

from fedadc.config import FLOWER_KEYS, RunConfig, compose, overrides_from_flower
from fedadc.experiment.expand import config_identity
from fedadc.experiment.sweep import truncate_metrics

log = logging.getLogger("fedadc.experiment")

STAGING = "flower"
LOG_FILE = "flower.log"
FLAT_GROUPS = {"method", "model", "data", "partition", "mode"}
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
    root = Path(__file__).resolve().parents[2]
    pyproject = root / "pyproject.toml"
    if not pyproject.is_file() or "[tool.flwr.app]" not in pyproject.read_text():
        raise FileNotFoundError(f"no Flower app at {root}: the flower runner needs a checkout")
    return root


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
    if key in FLAT_GROUPS:
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


def run_flower(
    overrides: Sequence[str],
    run: RunConfig,
    path: Path,
    *,
    flwr_home: Path | None = None,
    ports: tuple[int, int] | None = None,
    federation_config: str = "",
    timeout_s: float | None = None,
) -> None:
    """Run ``overrides`` with ``flwr run`` into ``path`` (already holding config.json).

    ``flwr_home`` and ``ports`` (SuperLink HTTP and control API, see :func:`free_ports`)
    make the local SuperLink private: ``flwr run`` otherwise reuses any SuperLink on the
    default ports, whoever started it.
    """
    staging = path / STAGING
    flat = flower_run_config(overrides)
    flat["results-dir"] = str(staging)
    mapped = compose(overrides_from_flower(flat))
    if config_identity(mapped) != config_identity(run):
        raise ValueError(f"the Flower run config {flat} does not compose to the sweep's run")
    resume = _checkpointed(staging)
    if resume is not None:
        flat["resume"] = str(resume)
        log.info("resuming %s after round %d", path.name, truncate_metrics(resume))
    staging.mkdir(parents=True, exist_ok=True)
    toml = path / "flower-run-config.toml"
    toml.write_text(to_toml(flat))
    federation = f"num-supernodes={run.federation.num_clients} {federation_config}".strip()
    command = [
        _flwr(),
        "run",
        str(repo_root()),
        "--stream",
        "--run-config",
        str(toml),
        "--federation-config",
        federation,
    ]
    env = {**os.environ, "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1"}
    if flwr_home is not None:
        Path(flwr_home).mkdir(parents=True, exist_ok=True)
        env["FLWR_HOME"] = str(Path(flwr_home).resolve())
    if ports is not None:
        env["FLWR_LOCAL_SUPERLINK_HTTP_API_PORT"] = str(ports[0])
        env["FLWR_LOCAL_CONTROL_API_PORT"] = str(ports[1])
    with open(path / LOG_FILE, "a") as out:
        out.write("$ " + shlex.join(command) + "\n")
        out.flush()
        proc = subprocess.run(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=timeout_s
        )
    finished = _finished(staging)
    if proc.returncode != 0 or finished is None:
        tail = (path / LOG_FILE).read_text()[-3000:]
        raise RuntimeError(f"flwr run failed (exit {proc.returncode}) for {path}:\n{tail}")
    for item in finished.iterdir():
        if item.name != "config.json":  # ours is the same run (checked above)
            shutil.move(str(item), str(path / item.name))
    shutil.rmtree(staging)


def _flwr() -> str:
    local = Path(sys.executable).parent / "flwr"
    found = str(local) if local.is_file() else shutil.which("flwr")
    if not found:
        raise FileNotFoundError("the flwr CLI is not installed (pip install flwr)")
    return found


def _checkpointed(staging: Path) -> Path | None:
    """The newest ServerApp directory in ``staging`` with a checkpoint and no summary."""
    if not staging.is_dir():
        return None
    found = [
        d
        for d in staging.iterdir()
        if (d / "checkpoint.pt").is_file() and not (d / "summary.json").exists()
    ]
    return max(found, key=lambda d: d.stat().st_mtime) if found else None


def _finished(staging: Path) -> Path | None:
    if not staging.is_dir():
        return None
    found = [d for d in staging.iterdir() if (d / "summary.json").is_file()]
    return max(found, key=lambda d: d.stat().st_mtime) if found else None


def free_ports() -> tuple[int, int]:
    """Two distinct free local ports for a private SuperLink (bound at once, then freed)."""
    with socket.socket() as a, socket.socket() as b:
        a.bind(("127.0.0.1", 0))
        b.bind(("127.0.0.1", 0))
        return a.getsockname()[1], b.getsockname()[1]


def stop_superlink(flwr_home: Path, ports: tuple[int, int] | None = None) -> list[int]:
    """Stop the background SuperLink that ``flwr run`` left for ``flwr_home`` (and, if
    given, the control port of ``ports``), by pid; returns the pids signalled."""
    marks = [str(Path(flwr_home).resolve()), "flower-superlink"]
    if ports is not None:
        marks.append(f"--control-api-address 127.0.0.1:{ports[1]}")
    stopped = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, UnicodeDecodeError):
            continue
        pid = int(proc.name)
        if all(mark in cmdline for mark in marks) and pid != os.getpid():
            try:
                os.kill(pid, signal.SIGTERM)
                stopped.append(pid)
            except OSError:
                pass
    return stopped
