"""Seconds and CPU-seconds per exchange of the project's apps on a real loopback deployment.

For each runtime (``--runtimes warm stock``) and security (``--security insecure tls``; tls =
TLS + SuperNode authentication) starts a SuperLink and 2 SuperNodes on 127.0.0.1 through the
scripts in deploy/ (`strategies/local_deployment.py`) and submits one ``flwr run .`` per
steps-per-message S and ServerApp poll interval, one after the other on the same processes:

* warm: ``fedadc-supernode`` (the scripts' default) and the ServerApp's ``push_pull`` every
  ``poll-s`` (0: automatic, ``DEFAULT_POLL_S``) with the fast object-pull retry;
* stock: ``--stock`` SuperNodes (a ``flwr-clientapp`` process per message) and the ServerApp
  as stock Flower times it: ``poll-s=3`` (``send_and_receive``'s 3 s) and
  ``fast-deploy=false``. Stock runs ``--stock-rounds`` rounds (an exchange costs 10-30 s).

Seconds per exchange: the gaps between the ``Receiving: train.step`` lines of SuperNode 0's log,
timestamped as they appear (`deployment_probe.LogClock`), within a round (the gap across a
round boundary holds the evaluation), from round 2 on (round 1: from its 2nd gap; its 1st pays
the FAB install and first imports). CPU-seconds per exchange per component (SuperLink, each
SuperNode, each ClientApp process, ServerApp incl. its SuperExec) over the same windows, from
/proc (`deployment_probe.CpuProbe`). The SuperLink does not log requests, so its request rate
is not counted: the table gives its measured CPU per second, idle (``--idle-s`` before the
first run) and during exchanges, and a request rate estimated from the poll intervals.
The load average is printed beside every row (a shared machine: compare rows of one run).

    python benchmarks/deployment_latency.py                    # warm + stock, insecure + TLS
    python benchmarks/deployment_latency.py --runtimes warm --poll-s 0.01 0.02 0.05 0.1
    python benchmarks/deployment_latency.py --spm 1 0          # S = 1 and S = all
    python benchmarks/deployment_latency.py --security insecure --rounds 2 --local-steps 2 \\
        --batch-size 8 32 \\
        --overrides "model=deit_tiny model.pretrained=false data.img_size=64 threads=1"

Every process started here is stopped at the end, also on errors.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"

from benchmarks.deployment_probe import CpuProbe, LogClock  # noqa: E402
from strategies.grid_exchange import DEFAULT_POLL_S  # noqa: E402
from strategies.local_deployment import DEPLOY, LocalDeployment  # noqa: E402

TINY = "model.kwargs.embed_dim=32 model.kwargs.depth=4 model.split_at=2 threads=1"
"""The default model: the tests' tiny ViT on digits."""
NODES = 2
IDLE_POLL_S = 3.0  # a SuperNode without messages polls every 3 s (warm: after 30 s idle)


def p90(values: list[float]) -> float:
    if len(values) < 2:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[89]


def load() -> float:
    return os.getloadavg()[0]


def windows(times: list[float], per_round: int) -> list[tuple[float, float, int]]:
    """(start, end, exchanges) of the measured stretches of one node's step arrivals."""
    rounds = [times[i : i + per_round] for i in range(0, len(times), per_round)]
    out = []
    for r, arrivals in enumerate(rounds):
        arrivals = arrivals[1:] if r == 0 and len(rounds) == 1 else arrivals
        if (r > 0 or len(rounds) == 1) and len(arrivals) > 1:
            out.append((arrivals[0], arrivals[-1], len(arrivals) - 1))
    return out


def figures(
    arrivals: list[float], per_round: int, cpu: CpuProbe
) -> tuple[list[float], dict[str, float], int, float]:
    """Measured gaps, CPU-seconds per component, exchanges and seconds in the windows."""
    spans = windows(arrivals, per_round)
    gaps = [(a, b - a) for a, b in itertools.pairwise(arrivals)]
    kept = [g for w0, w1, _ in spans for a, g in gaps if w0 <= a < w1]
    used: dict[str, float] = {}
    for w0, w1, _ in spans:
        for comp, sec in cpu.used(w0, w1).items():
            used[comp] = used.get(comp, 0.0) + sec
    n = sum(k for _, _, k in spans)
    return kept, used, n, sum(w1 - w0 for w0, w1, _ in spans)


def deploy(root: Path, runtime: str, security: str) -> LocalDeployment:
    certs = keys = None
    if security == "tls":
        certs, keys = root / "certs", root / "keys"
        for cmd in (
            [DEPLOY / "make_certificates.sh", "127.0.0.1", certs],
            [DEPLOY / "make_node_keys.sh", str(NODES), keys],
        ):
            subprocess.run(cmd, check=True, capture_output=True)
    deployment = LocalDeployment(root, certs=certs, node_auth=security == "tls")
    try:
        deployment.start_superlink()
        for k in range(NODES):
            key = None
            if keys is not None:
                deployment.register(keys / f"node_{k}.pub")
                key = keys / f"node_{k}"
            deployment.start_supernode(k, NODES, key=key, stock=runtime == "stock")
        deployment.wait_online(NODES, timeout=300)
    except BaseException:
        deployment.stop()
        raise
    return deployment


def measure(root: Path, runtime: str, security: str, args: argparse.Namespace) -> list[dict]:
    """One deployment; one `flwr run` per (S, poll-s); a row of figures per run."""
    rows = []
    deployment = deploy(root, runtime, security)
    names = {f"SuperNode {k}": deployment.logs[f"supernode-{k}"] for k in range(NODES)}
    clock, cpu = LogClock(names), CpuProbe(deployment)
    cpu.sample()  # every process of the deployment has a sample before the idle window
    clock.start()
    cpu.start()
    try:
        t0 = time.monotonic()
        time.sleep(args.idle_s)
        idle_link = cpu.used(t0, time.monotonic()).get("SuperLink", 0.0) / args.idle_s
        stock = runtime == "stock"
        polls = [3.0] if stock else args.poll_s
        for s, poll, batch in itertools.product(args.spm, polls, args.batch_size):
            rounds = args.stock_rounds if stock else args.rounds
            flat = {
                "num-clients": NODES,
                "local-steps": args.local_steps,
                "rounds": rounds,
                "batch-size": batch,
                "seed": 7,
                "overrides": args.overrides,
                "steps-per-message": s,
            }
            extra = f"poll-s={poll} fast-deploy={str(not stock).lower()}"
            results = root / f"results-s{s}-p{poll}-b{batch}"
            results.mkdir(parents=True)
            before = len(clock.times["SuperNode 0"])
            started, load_before = time.perf_counter(), load()
            deployment.run(flat, results, extra=extra, timeout=3600)
            total = time.perf_counter() - started
            clock.poll()
            arrivals = clock.times["SuperNode 0"][before:]
            per_round = args.local_steps // (s or args.local_steps) + 1
            if len(arrivals) != rounds * per_round:
                raise RuntimeError(f"{len(arrivals)} step messages, want {rounds * per_round}")
            kept, used, n, active_s = figures(arrivals, per_round, cpu)
            rows.append(
                {
                    "runtime": runtime,
                    "security": security,
                    "S": s or f"all ({args.local_steps})",
                    "B": batch,
                    "poll": "3 (stock)" if stock else (poll or DEFAULT_POLL_S),
                    "median": statistics.median(kept),
                    "p90": p90(kept),
                    "n": len(kept),
                    "cpu": {c: v / n for c, v in sorted(used.items())},
                    "link_idle": idle_link,
                    "link_active": used.get("SuperLink", 0.0) / active_s,
                    "total": total,
                    "load": (load_before + load()) / 2,
                }
            )
            print(
                f"{runtime}/{security} S={s} poll={poll} B={batch}: gaps "
                f"{[round(g, 2) for g in kept]} ({total:.0f} s, load {load():.1f})",
                flush=True,
            )
    finally:
        clock.stop()
        cpu.stop()
        deployment.stop()
    return rows


def report(rows: list[dict], args: argparse.Namespace) -> None:
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(
        f"\n{now}, {platform.machine()}, {os.cpu_count()} CPUs, load now {load():.1f}; "
        f"{NODES} SuperNodes on loopback; {args.local_steps} local steps, warm {args.rounds} "
        f"rounds, stock {args.stock_rounds}; "
        f"overrides: {args.overrides}\n"
    )
    print("| runtime | security | S | B | poll s | median s / exchange | p90 s | n | load |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['runtime']} | {r['security']} | {r['S']} | {r['B']} | {r['poll']} | "
            f"{r['median']:.3f} | {r['p90']:.3f} | {r['n']} | {r['load']:.1f} |"
        )
    comps = sorted({c for r in rows for c in r["cpu"]})
    print("\nCPU-seconds per exchange (same windows):\n")
    print(f"| runtime | security | S | B | poll s | {' | '.join(comps)} | total |")
    print("|---" * (6 + len(comps)) + "|")
    for r in rows:
        cells = " | ".join(f"{r['cpu'].get(c, 0.0):.3f}" for c in comps)
        print(
            f"| {r['runtime']} | {r['security']} | {r['S']} | {r['B']} | {r['poll']} | {cells} | "
            f"{sum(r['cpu'].values()):.3f} |"
        )
    print("\nSuperLink CPU-s per s (measured) and request rate (estimated from poll intervals):\n")
    print(
        "| runtime | security | poll s | idle CPU-s/s | active CPU-s/s | est. idle req/s "
        "| est. active polls/s |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        poll = 3.0 if r["runtime"] == "stock" else float(r["poll"])
        node_poll = 3.0 if r["runtime"] == "stock" else args.node_poll_s
        # idle: one PullMessages per node per 3 s; active: each node's poll while it has no
        # message, plus the ServerApp's pulls of the replies (messages' own requests extra)
        print(
            f"| {r['runtime']} | {r['security']} | {r['poll']} | {r['link_idle']:.3f} | "
            f"{r['link_active']:.3f} | {NODES / IDLE_POLL_S:.2f} | "
            f"<= {NODES / node_poll + 1 / poll:.0f} |"
        )
    for security in sorted({r["security"] for r in rows}):
        by = {(r["runtime"], r["S"], r["B"]): r for r in rows if r["security"] == security}
        for (runtime, s, b), r in by.items():
            if runtime == "warm" and ("stock", s, b) in by:
                ratio = by[("stock", s, b)]["median"] / r["median"]
                print(f"{security} S={s} B={b}: stock / warm median s per exchange = {ratio:.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--runtimes", nargs="+", choices=["warm", "stock"], default=["warm", "stock"]
    )
    parser.add_argument(
        "--security", nargs="+", choices=["insecure", "tls"], default=["insecure", "tls"]
    )
    parser.add_argument("--local-steps", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3, help="warm runs")
    parser.add_argument("--stock-rounds", type=int, default=1)
    parser.add_argument(
        "--spm", type=int, nargs="+", default=[1], help="steps per message (0: all)"
    )
    parser.add_argument("--poll-s", type=float, nargs="+", default=[0.0], help="warm ServerApp")
    parser.add_argument(
        "--node-poll-s",
        type=float,
        default=0.05,
        help="fedadc-supernode's --poll-s (for the estimate)",
    )
    parser.add_argument("--batch-size", type=int, nargs="+", default=[16])
    parser.add_argument("--idle-s", type=float, default=6.0)
    parser.add_argument("--overrides", default=TINY, help="Hydra overrides")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="fedadc-deploy-bench-") as tmp:
        for security in args.security:
            for runtime in args.runtimes:
                rows += measure(Path(tmp) / f"{runtime}-{security}", runtime, security, args)
    report(rows, args)


if __name__ == "__main__":
    main()
