"""Watch a running loopback deployment from outside: message arrival times and CPU per process.

Neither Flower nor fedadc timestamps its log lines, and the SuperLink does not log requests,
so the benchmark observes the processes it started without touching them:

* `LogClock` tails the SuperNodes' log files (written unbuffered) every 10 ms and notes the
  monotonic time at which each ``Receiving: train.step`` line appears: one per exchange and
  node, so the gaps between them are the seconds per exchange as a SuperNode sees them.
* `CpuProbe` samples ``utime + stime`` of every process of the deployment (the spawned
  process groups, their descendants, and the detached SuperExec/ServerApp found by the
  deployment's port on their command line) every 0.2 s from ``/proc/<pid>/stat``, and gives
  the CPU-seconds each component used between two instants (linear between samples; a
  process that ends loses at most its last 0.2 s; children's CPU is never counted twice).
"""

from __future__ import annotations

import os
import re
import threading
import time
from bisect import bisect_left
from collections import defaultdict
from pathlib import Path

from strategies.launcher import children, pids_mentioning
from strategies.local_deployment import LocalDeployment

TICK = os.sysconf("SC_CLK_TCK")
STEP_LINE = re.compile(r"Receiving: train\.step message")


class LogClock(threading.Thread):
    """Arrival times of lines matching ``pattern`` in each of ``files`` (name -> path)."""

    def __init__(self, files: dict[str, Path], pattern: re.Pattern = STEP_LINE) -> None:
        super().__init__(daemon=True)
        self.files, self.pattern = files, pattern
        self.times: dict[str, list[float]] = {name: [] for name in files}
        self._offsets = dict.fromkeys(files, 0)
        self._rest = dict.fromkeys(files, "")
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(0.01):
            self.poll()

    def poll(self) -> None:
        now = time.monotonic()
        for name, path in self.files.items():
            try:
                with path.open("rb") as fh:
                    fh.seek(self._offsets[name])
                    chunk = fh.read()
            except OSError:
                continue
            self._offsets[name] += len(chunk)
            *lines, self._rest[name] = (self._rest[name] + chunk.decode(errors="replace")).split(
                "\n"
            )
            self.times[name] += [now for line in lines if self.pattern.search(line)]

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=2)
        self.poll()


def _cpu_s(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime, not the children's


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except (OSError, UnicodeDecodeError):
        return ""


def role(cmdline: str, owner: str) -> str:
    """The component a process belongs to; ``owner`` is the spawned script's name
    (``superlink``, ``supernode-K``) or ``server`` for the detached helpers."""
    if "flower-superlink" in cmdline:
        return "SuperLink"
    if "flwr-serverapp" in cmdline or ("serverapp" in cmdline and "superexec" in cmdline):
        return "ServerApp"
    node = owner.rsplit("-", 1)[-1]
    if "client_app.warm.worker" in cmdline or "flwr-clientapp" in cmdline:
        return f"ClientApp {node}"
    if owner.startswith("supernode"):
        return f"SuperNode {node}"
    return {"superlink": "SuperLink", "server": "ServerApp"}.get(owner, owner)


class CpuProbe(threading.Thread):
    """CPU-seconds per component of ``deployment`` over time (see module docstring)."""

    def __init__(self, deployment: LocalDeployment, every_s: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.deployment, self.every_s = deployment, every_s
        self.roles: dict[int, str] = {}
        self.samples: dict[int, tuple[list[float], list[float]]] = defaultdict(lambda: ([], []))
        self._halt = threading.Event()
        self._next_scan = 0.0

    def _discover(self) -> None:
        port = f"127.0.0.1:{self.deployment.port}"
        owned = {pid: name for name, p in self.deployment.procs.items() for pid in [p.pid]}
        if time.monotonic() >= self._next_scan:  # the detached helpers: a full /proc scan
            self._next_scan = time.monotonic() + 1.0
            for pid in pids_mentioning(port):
                owned.setdefault(pid, "server")
        owned.update({p: "server" for p in self.roles if self.roles[p] == "ServerApp"})
        for pid, name in list(owned.items()):
            for kid in [pid, *children(pid)]:
                if kid not in self.roles:
                    self.roles[kid] = role(_cmdline(kid), name)

    def run(self) -> None:
        while not self._halt.wait(self.every_s):
            self.sample()

    def sample(self) -> None:
        self._discover()
        now = time.monotonic()
        for pid in self.roles:
            cpu = _cpu_s(pid)
            if cpu is not None:
                ts, vs = self.samples[pid]
                ts.append(now)
                vs.append(cpu)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=2)

    @staticmethod
    def _at(ts: list[float], vs: list[float], t: float) -> float:
        if not ts or t <= ts[0]:
            return vs[0] if ts and t >= ts[0] else 0.0
        if t >= ts[-1]:
            return vs[-1]
        i = bisect_left(ts, t)
        w = (t - ts[i - 1]) / (ts[i] - ts[i - 1])
        return vs[i - 1] + w * (vs[i] - vs[i - 1])

    def used(self, t0: float, t1: float) -> dict[str, float]:
        """CPU-seconds per component between ``t0`` and ``t1`` (monotonic)."""
        out: dict[str, float] = defaultdict(float)
        for pid, (ts, vs) in list(self.samples.items()):
            # a process first seen after t0 counts from zero (it started in the window)
            start = self._at(ts, vs, t0) if ts and ts[0] <= t0 else 0.0
            out[self.roles[pid]] += max(0.0, self._at(ts, vs, t1) - start)
        return dict(out)
