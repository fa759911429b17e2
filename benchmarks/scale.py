"""The Flower simulation with many clients: time per round and peak memory against N.

Usage:  python benchmarks/scale.py [--nodes 10 50 100] [--sampled 10] [--rounds 3]

For each N, one `flwr run <repo root> --stream` with its own FLWR_HOME and private SuperLink
ports (so it never reuses another local SuperLink), ``num-supernodes=N`` and the run config
``num-clients=N rounds=R local-steps=2`` with ``federation.fraction_train=<sampled/N>
federation.min_train_clients=<sampled> threads=1``: every round trains the same number of
sampled clients whatever N is (defaults: digits, vit_micro, ADC xi = 0.1, B = 32).

* time per round: differences of metrics.jsonl's cumulative ``wall_s`` (rounds 2..; round 1
  holds the warm-up), median and mean; each difference includes the previous round's
  evaluation on the test split (``wall_s`` is taken just before it).
* peak memory: every ``--interval`` s the VmRSS (/proc/<pid>/status) of every process of
  the run is summed: the `flwr` CLI, the SuperLink it starts for this FLWR_HOME and all their
  descendants (SuperExec, the simulation process, Ray's GCS/raylet/dashboard/workers).
  Summed RSS counts shared pages (libraries, Ray's shared-memory object store) once per
  process, so it overstates; PSS (/proc/<pid>/smaps_rollup, shared pages split between
  their users) is sampled every 5th tick as the fairer figure.

``--reference`` adds a control: the same run configs in this process through the in-process
reference (``train_reference``: fedadc's round loop and client/server code without Flower),
to separate how fedadc's own work per round moves with N from what Flower adds.

After each run the SuperLink is stopped (``strategies.launcher.LocalSimulation.stop``: the
processes started for its FLWR_HOME, by pid) and any process of the run still alive is
terminated by pid.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import itertools
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from strategies.launcher import LocalSimulation  # noqa: E402


# ====================================================================== /proc
def _all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _stat(pid: int) -> list[str]:
    """Fields of /proc/<pid>/stat after "(comm)": state, ppid, ..., starttime at [19]."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return []


def _ppid(pid: int) -> int | None:
    fields = _stat(pid)
    return int(fields[1]) if fields else None


def _identity(pid: int) -> tuple[int, str] | None:
    """(pid, start time): a pid the kernel reuses later gets another start time."""
    fields = _stat(pid)
    return (pid, fields[19]) if fields else None


def _cmdline(pid: int) -> str:
    try:
        return (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return ""


def _name(pid: int) -> str:
    """Short process name: Ray's ``ray::X`` titles, else the script's base name."""
    words = _cmdline(pid).split()
    if not words:
        return "?"
    if words[0].startswith("ray::"):
        return words[0]
    script = next((w for w in words[1:] if not w.startswith("-")), words[0])
    return Path(script if words[0].endswith(("python", "python3")) else words[0]).name


def _status_kb(pid: int, key: str = "VmRSS") -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _pss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def run_processes(root_pid: int, marker: str) -> list[int]:
    """``root_pid``, every process whose command line holds ``marker`` (the SuperLink of this
    FLWR_HOME), and all their descendants."""
    pids = _all_pids()
    children: dict[int, list[int]] = {}
    for pid in pids:
        parent = _ppid(pid)
        if parent is not None:
            children.setdefault(parent, []).append(pid)
    roots = {root_pid} | {p for p in pids if p != os.getpid() and marker in _cmdline(p)}
    seen: set[int] = set()
    stack = list(roots)
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        stack.extend(children.get(pid, ()))
    return sorted(seen)


@dataclass
class MemorySampler:
    """Samples the summed RSS (and every 5th tick PSS) of a run's process tree."""

    root_pid: int
    marker: str
    interval: float
    peak_rss_kb: int = 0
    peak_pss_kb: int = 0
    peak_processes: int = 0
    peak_breakdown: list[tuple[int, str]] = field(default_factory=list)
    seen: set[tuple[int, str]] = field(default_factory=set)
    names: set[str] = field(default_factory=set)
    samples: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self._stop.is_set():
            pids = run_processes(self.root_pid, self.marker)
            self.seen.update(i for i in map(_identity, pids) if i is not None)
            self.names.update(_name(p) for p in pids)
            rss = {p: _status_kb(p) for p in pids}
            total = sum(rss.values())
            if total > self.peak_rss_kb:
                self.peak_rss_kb = total
                top = sorted(rss.items(), key=lambda kv: -kv[1])[:6]
                self.peak_breakdown = [(kb, _cmdline(p)[:70]) for p, kb in top]
            self.peak_processes = max(self.peak_processes, len(pids))
            if self.samples % 5 == 0:
                self.peak_pss_kb = max(self.peak_pss_kb, sum(_pss_kb(p) for p in pids))
            self.samples += 1
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()


# ====================================================================== one run
@dataclass
class Result:
    nodes: int
    sampled: list[int]
    round_walls: list[float]
    per_round_s: float
    elapsed_s: float
    peak_rss_gib: float
    peak_pss_gib: float
    processes: int
    breakdown: list[tuple[int, str]]
    names: list[str]
    leftovers: list[int]


def run_once(n: int, args: argparse.Namespace, work: Path) -> Result:
    """One `flwr run` with ``n`` SuperNodes; returns its figures (SuperLink stopped after)."""
    home = work / f"flwr-home-{n}"
    results = work / f"results-{n}"
    results.mkdir()
    simulation = LocalSimulation(home)
    overrides = (
        f"federation.fraction_train={args.sampled / n!r} "
        f"federation.min_train_clients={args.sampled} threads=1"
    )
    run_config = (
        f"num-clients={n} rounds={args.rounds} local-steps={args.local_steps} "
        f'results-dir="{results}" overrides="{overrides}"'
    )
    federation = f"num-supernodes={n} {args.federation_config}".strip()
    cmd = simulation.command(ROOT, run_config, federation)
    print(f"\n[N={n}] {' '.join(cmd)}", flush=True)
    log = (work / f"flwr-{n}.log").open("w")
    started = time.perf_counter()
    proc = simulation.start(
        ROOT, run_config, federation, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
    )
    marker = f"{simulation.home}/"  # in the SuperLink's --log-file and --database arguments
    sampler = MemorySampler(proc.pid, marker, args.interval)
    thread = threading.Thread(target=sampler.run, daemon=True)
    thread.start()
    try:
        rc = proc.wait(timeout=args.timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        rc = -1
    elapsed = time.perf_counter() - started
    sampler.stop()
    thread.join()
    log.close()
    leftovers = stop_run(simulation, proc.pid, marker, sampler.seen)
    rows = []
    for path in results.rglob("metrics.jsonl"):
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if rc != 0 or not rows:
        tail = (work / f"flwr-{n}.log").read_text()[-3000:]
        print(f"[N={n}] flwr run ended with {rc} after {elapsed:.0f} s:\n{tail}", flush=True)
    walls = [r["wall_s"] for r in rows]
    diffs = [b - a for a, b in itertools.pairwise(walls)]
    return Result(
        nodes=n,
        sampled=[int(r["clients"]) for r in rows],
        round_walls=walls,
        per_round_s=statistics.median(diffs) if diffs else float("nan"),
        elapsed_s=elapsed,
        peak_rss_gib=sampler.peak_rss_kb / 2**20,
        peak_pss_gib=sampler.peak_pss_kb / 2**20,
        processes=sampler.peak_processes,
        breakdown=sampler.peak_breakdown,
        names=sorted(sampler.names),
        leftovers=leftovers,
    )


def stop_run(
    simulation: LocalSimulation, root_pid: int, marker: str, seen: set[tuple[int, str]]
) -> list[int]:
    """Stop this run's SuperLink, then any process of the run still alive (by pid)."""
    simulation.stop()
    deadline = time.time() + 10
    while True:
        for pid in run_processes(root_pid, marker):
            ident = _identity(pid)
            if ident is not None and pid != os.getpid():
                seen.add(ident)
        alive = [pid for pid, start in seen if _alive(pid, start)]
        if not alive or time.time() > deadline:
            break
        time.sleep(0.5)
    for sig in (signal.SIGTERM, signal.SIGKILL):  # only processes seen in this run's tree
        for pid, start in seen:
            if _alive(pid, start):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
        time.sleep(2)
    return alive


def _alive(pid: int, start: str) -> bool:
    """The same process (same start time) is still running and not a zombie."""
    fields = _stat(pid)
    return bool(fields) and fields[19] == start and fields[0] != "Z" and pid != os.getpid()


def reference_walls(n: int, args: argparse.Namespace) -> list[float]:
    """Cumulative ``wall_s`` per round of the same run config in-process (no Flower)."""
    import tomllib

    from fedadc.config import compose
    from fedadc.federated.reference import train_reference
    from strategies.run_config import FLOWER_INTERNAL_KEYS, overrides_from_flower

    defaults = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["flwr"]["app"]
    flat = {k: v for k, v in defaults["config"].items() if k not in FLOWER_INTERNAL_KEYS}
    flat.update(
        {
            "num-clients": n,
            "rounds": args.rounds,
            "local-steps": args.local_steps,
            "overrides": f"federation.fraction_train={args.sampled / n!r} "
            f"federation.min_train_clients={args.sampled} threads=1",
        }
    )
    result = train_reference(compose(overrides_from_flower(flat)))
    return [row["wall_s"] for row in result.history]


# ====================================================================== main
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--nodes", type=int, nargs="+", default=[10, 50, 100])
    p.add_argument("--sampled", type=int, default=10, help="clients trained per round")
    p.add_argument("--rounds", type=int, default=3, help=">= 2 (round 1 is not measured)")
    p.add_argument("--local-steps", type=int, default=2)
    p.add_argument("--interval", type=float, default=0.2, help="memory sampling period (s)")
    p.add_argument("--timeout", type=float, default=1200, help="per run (s)")
    p.add_argument("--federation-config", default="", help="extra, e.g. client-resources-...")
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    p.add_argument("--reference", action="store_true", help="also run in-process (control)")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fedadc-scale-"))
    started = time.time()
    results = []
    for n in args.nodes:
        r = run_once(n, args, work)
        results.append(r)
        print(
            f"[N={n}] sampled {r.sampled}, wall_s {[round(w, 1) for w in r.round_walls]}, "
            f"{r.per_round_s:.1f} s/round, peak RSS {r.peak_rss_gib:.2f} GiB "
            f"(PSS {r.peak_pss_gib:.2f}), {r.processes} processes, {r.elapsed_s:.0f} s in all"
            + (f"; had to terminate {r.leftovers}" if r.leftovers else ""),
            flush=True,
        )
        for kb, cmd in r.breakdown:
            print(f"    {kb / 2**20:5.2f} GiB  {cmd}")
        print(f"    processes seen: {', '.join(r.names)}")
    print(
        f"\n{'N':>5}{'sampled':>9}{'s/round':>9}{'mean':>7}{'round 1 s':>11}{'run s':>8}"
        f"{'peak RSS GiB':>14}{'peak PSS GiB':>14}{'procs':>7}"
    )
    for r in results:
        sampled = "/".join(str(s) for s in sorted(set(r.sampled))) or "-"
        first = r.round_walls[0] if r.round_walls else float("nan")
        walls = r.round_walls
        mean = (walls[-1] - walls[0]) / (len(walls) - 1) if len(walls) > 1 else float("nan")
        print(
            f"{r.nodes:>5}{sampled:>9}{r.per_round_s:>9.1f}{mean:>7.2f}{first:>11.1f}"
            f"{r.elapsed_s:>8.0f}"
            f"{r.peak_rss_gib:>14.2f}{r.peak_pss_gib:>14.2f}{r.processes:>7}"
        )
    print(
        f"\n{datetime.date.today()} {platform.node()} {os.cpu_count()} cpus; rounds "
        f"{args.rounds} x {args.local_steps} local steps; s/round = median of wall_s "
        f"differences over rounds 2.., mean = their mean; {time.time() - started:.0f} s in all; "
        f"work dir {work}"
    )
    if args.reference:
        print("\nIn-process reference, same configs (fedadc's own work per round):")
        print(f"{'N':>5}{'s/round':>9}{'mean':>7}")
        for n in args.nodes:
            walls = reference_walls(n, args)
            diffs = [b - a for a, b in itertools.pairwise(walls)]
            print(f"{n:>5}{statistics.median(diffs):>9.2f}{statistics.mean(diffs):>7.2f}")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    sys.exit(0 if all(r.round_walls for r in results) else 1)


if __name__ == "__main__":
    main()
