"""Seconds per round of a real deployment on loopback: warm vs stock SuperNodes, S = 1 vs all.

For each runtime (`--runtimes warm stock`: fedadc's warm runtime, the scripts' default, and
plain Flower with `--stock`) starts a SuperLink and 2 SuperNodes as processes on 127.0.0.1
(insecure, through the scripts in deploy/, each with a private FLWR_HOME and free ports;
`strategies/local_deployment.py`), submits one `flwr run . <connection> --stream` per
steps-per-message value, one after the other on the same processes, and reads the round
times from each run's metrics.jsonl (`wall_s` is cumulative since the round loop started;
a round's time is the difference). The median is over rounds 2.. (round 1 pays for
first-time imports and the FAB install). With `--simulation` it also runs the same configs
with `flwr run` in simulation.

    python benchmarks/deployment_latency.py        # 2 clients, 4 local steps, 3 rounds
    python benchmarks/deployment_latency.py --runtimes warm --rounds 6
    python benchmarks/deployment_latency.py --local-steps 8 --rounds 4 --simulation

Every process started here is stopped at the end, also on errors.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"

from strategies.launcher import LocalSimulation, run_config_text  # noqa: E402
from strategies.local_deployment import LocalDeployment  # noqa: E402

BASE = {
    "batch-size": 16,
    "seed": 7,
    "overrides": "model.kwargs.embed_dim=32 model.kwargs.depth=4 model.split_at=2 threads=1",
}
"""The run config besides clients, steps and rounds (a tiny ViT on digits)."""


def round_times(run_dir: Path) -> list[float]:
    walls = [
        json.loads(line)["wall_s"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()
    ]
    return [b - a for a, b in zip([0.0, *walls], walls, strict=False)]


def only_run(results: Path) -> Path:
    (run,) = [p for p in results.iterdir() if (p / "summary.json").exists()]
    return run


def run_deployment(
    root: Path, runtime: str, clients: int, base: dict, variants: dict[str, int]
) -> list[tuple]:
    """One deployment (warm or stock SuperNodes); one run per S, one after the other."""
    rows = []
    deployment = LocalDeployment(root)
    try:
        started = time.perf_counter()
        deployment.start_superlink()
        for pid in range(clients):
            deployment.start_supernode(pid, clients, stock=runtime == "stock")
        deployment.wait_online(clients)
        print(f"{runtime} deployment up in {time.perf_counter() - started:.1f} s", flush=True)
        for label, s in variants.items():
            results = root / f"results-s{s}"
            results.mkdir(parents=True)
            t0 = time.perf_counter()
            deployment.run({**base, "steps-per-message": s}, results, timeout=3600)
            total = time.perf_counter() - t0
            times = round_times(only_run(results))
            rows.append((f"deployment, {runtime}", label, s, times, total))
            print(f"{runtime} S={label}: rounds {[round(t, 2) for t in times]}", flush=True)
    finally:
        deployment.stop()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--local-steps", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--overrides", default=BASE["overrides"], help="Hydra overrides")
    parser.add_argument("--simulation", action="store_true", help="also time simulation")
    parser.add_argument(
        "--runtimes", nargs="+", choices=["warm", "stock"], default=["warm", "stock"]
    )
    parser.add_argument(
        "--all-first", action="store_true", help="run S=all before S=1 (to see drift)"
    )
    args = parser.parse_args()

    base = {
        **BASE,
        "num-clients": args.clients,
        "local-steps": args.local_steps,
        "rounds": args.rounds,
        "overrides": args.overrides,
    }
    variants = {"1": 1, f"all ({args.local_steps})": 0}
    if args.all_first:
        variants = dict(reversed(variants.items()))
    rows = []
    with tempfile.TemporaryDirectory(prefix="fedadc-deploy-bench-") as tmp:
        tmp_path = Path(tmp)
        for runtime in args.runtimes:
            rows += run_deployment(tmp_path / runtime, runtime, args.clients, base, variants)
        if args.simulation:
            simulation = LocalSimulation(tmp_path / "sim-home")
            federation = f"num-supernodes={args.clients} client-resources-num-cpus=2"
            try:
                for label, s in variants.items():
                    results = tmp_path / f"sim-s{s}"
                    results.mkdir()
                    flat = {**base, "steps-per-message": s, "results-dir": str(results)}
                    t0 = time.perf_counter()
                    proc = simulation.run(
                        ROOT, run_config_text(flat), federation, capture_output=True, text=True
                    )
                    if proc.returncode != 0:
                        raise RuntimeError(f"flwr run failed:\n{proc.stdout[-3000:]}")
                    total = time.perf_counter() - t0
                    times = round_times(only_run(results))
                    rows.append(("simulation", label, s, times, total))
                    print(f"simulation S={label}: rounds {[round(t, 1) for t in times]}")
            finally:
                simulation.stop()

    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(
        f"\n{now}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; "
        f"{args.clients} clients, {args.local_steps} local steps, {args.rounds} rounds, "
        f"overrides: {args.overrides}\n"
    )
    print(
        "| runtime | S | exchanges / round | s / round (median, rounds 2..) | s / exchange "
        "| round 1 s | whole `flwr run` s |"
    )
    print("|---|---|---|---|---|---|---|")
    medians = {}
    for runtime, label, s, times, total in rows:
        per_round = statistics.median(times[1:] or times)
        exchanges = (args.local_steps // (s or args.local_steps)) + 1
        medians[(runtime, s)] = per_round
        print(
            f"| {runtime} | {label} | {exchanges} | {per_round:.1f} | "
            f"{per_round / exchanges:.2f} | {times[0]:.1f} | {total:.0f} |"
        )
    for runtime in sorted({r for r, _ in medians}):
        if (runtime, 1) in medians and (runtime, 0) in medians:
            ratio = medians[(runtime, 1)] / medians[(runtime, 0)]
            print(f"\n{runtime}: S=1 takes {ratio:.2f}x the time per round of S=all")
    for s in (1, 0):
        warm, stock = medians.get(("deployment, warm", s)), medians.get(("deployment, stock", s))
        if warm and stock:
            print(f"S={s or 'all'}: stock / warm time per round = {stock / warm:.1f}x")


if __name__ == "__main__":
    main()
