"""The one private ``flwr run`` launcher, and the process helpers that stop what it started.

``flwr run`` starts a local SuperLink that outlives the run and reuses any SuperLink on the
default ports (39091, 39093), also one of another FLWR_HOME. :class:`LocalSimulation` gives
each user (the sweep runner, tests, benchmarks) its own FLWR_HOME and free ports, and
``stop`` ends the processes started for that home by pid (never by a name pattern that
could match someone else's).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
"""The Flower app's folder (this checkout's pyproject.toml)."""


def free_ports(count: int = 2) -> list[int]:
    """``count`` distinct free TCP ports on 127.0.0.1 (all bound at once, then released)."""
    socks = [socket.socket() for _ in range(count)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def run_config_text(flat: Mapping[str, Any]) -> str:
    """``--run-config`` text of flat keys: strings JSON-quoted, booleans in TOML's spelling."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        return json.dumps(v) if isinstance(v, str) else str(v)

    return " ".join(f"{k}={value(v)}" for k, v in flat.items())


def flwr_executable() -> str:
    """The ``flwr`` CLI of this interpreter's environment, else the one on PATH."""
    local = Path(sys.executable).parent / "flwr"
    found = str(local) if local.is_file() else shutil.which("flwr")
    if not found:
        raise FileNotFoundError("the flwr CLI is not installed (pip install flwr)")
    return found


def children(pid: int) -> list[int]:
    """All descendants of ``pid`` (children first)."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    kids = [int(p) for p in text.split()]
    return kids + [g for k in kids for g in children(k)]


def pids_mentioning(needle: str) -> list[int]:
    """Pids (not this process) whose command line contains ``needle``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, UnicodeDecodeError):
            continue
        if needle in cmdline:
            found.append(int(entry.name))
    return found


def is_running(pid: int) -> bool:
    """False for processes that are gone or zombies (dead, not yet reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def terminate(pids: set[int], grace_s: float = 10.0) -> None:
    """SIGTERM ``pids``, wait up to ``grace_s`` for them to end, SIGKILL the rest."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace_s
        while any(is_running(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.2)
        if not any(is_running(p) for p in pids):
            return


class LocalSimulation:
    """``flwr run`` against one private local SuperLink (its own FLWR_HOME and ports).

    Every ``run`` reuses the SuperLink the first one started; ``stop`` ends it.
    """

    def __init__(self, home: Path, ports: tuple[int, int] | None = None) -> None:
        self.home = Path(home).expanduser().resolve()
        self.home.mkdir(parents=True, exist_ok=True)
        self.ports = ports or tuple(free_ports(2))
        self.env = {
            **os.environ,
            "FLWR_HOME": str(self.home),
            "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
            "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(self.ports[0]),
            "FLWR_LOCAL_CONTROL_API_PORT": str(self.ports[1]),
        }

    def command(self, app: Path, run_config: str | Path, federation_config: str) -> list[str]:
        """``flwr run <app> --stream`` with a run config (``k=v`` text or a TOML file)."""
        return [
            flwr_executable(),
            "run",
            str(app),
            "--stream",
            "--run-config",
            str(run_config),
            "--federation-config",
            federation_config,
        ]

    def start(
        self, app: Path, run_config: str | Path, federation_config: str, **popen: Any
    ) -> subprocess.Popen:
        """Start ``flwr run`` in the background (the caller waits on it)."""
        command = self.command(app, run_config, federation_config)
        return subprocess.Popen(command, env=self.env, **popen)

    def run(
        self,
        app: Path,
        run_config: str | Path,
        federation_config: str,
        *,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> subprocess.CompletedProcess:
        """``flwr run`` to its end (``subprocess.run`` keyword arguments pass through)."""
        command = self.command(app, run_config, federation_config)
        return subprocess.run(command, env=self.env, timeout=timeout, check=False, **kwargs)

    def processes(self) -> set[int]:
        """Running processes started for this home: those naming it on their command line
        (the SuperLink's database and log file), the helpers they started detached (the
        SuperExec names its parent with ``--parent-pid``), and their descendants."""
        marked = pids_mentioning(str(self.home))
        marked += [h for pid in marked for h in pids_mentioning(f"--parent-pid {pid} ")]
        return {p for pid in marked for p in (pid, *children(pid)) if is_running(p)}

    def stop(self) -> None:
        """Stop the SuperLink (and whatever it started) that ``flwr run`` left running."""
        terminate(self.processes())
