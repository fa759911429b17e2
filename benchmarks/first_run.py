"""The README's first command, timed and scored: `flwr run .` on the embedded default.

For each seed, runs the app exactly as a user does (10 simulated SuperNodes, the
pyproject.toml defaults, only ``seed`` and ``results-dir`` set), with one private local
SuperLink (strategies/launcher.LocalSimulation, stopped at the end), and reports the wall
time from command start to exit, the final test accuracy (the last round's, not a peak),
and the bytes, from the run's summary.json. ``--fast-sim both`` repeats each seed with
Flower's stock simulation polling (``fast-sim=false``) side by side.

    python benchmarks/first_run.py --seeds 0 1 2 --fast-sim both
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from strategies.launcher import ROOT, LocalSimulation, run_config_text

README_FEDERATION = "num-supernodes=10 client-resources-num-cpus=1"
"""The ``--federation-config`` of the README's first command."""


def one_run(
    sim: LocalSimulation, seed: int, fast_sim: bool, out: Path, extra: dict, federation: str
) -> dict:
    results = out / f"s{seed}-{'fast' if fast_sim else 'stock'}"
    flat = {"seed": seed, "fast-sim": fast_sim, "results-dir": str(results), **extra}
    log = out / f"{results.name}.log"
    start = time.perf_counter()
    with open(log, "w") as fh:
        done = sim.run(ROOT, run_config_text(flat), federation, stdout=fh, stderr=fh, timeout=1800)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"flwr run failed (rc {done.returncode}); see {log}")
    (summary_path,) = results.glob("*/summary.json")
    summary = json.loads(summary_path.read_text())
    history = [json.loads(x) for x in (summary_path.parent / "metrics.jsonl").open()]
    return {
        "seed": seed,
        "fast_sim": fast_sim,
        "wall_s": wall,
        "final_accuracy": summary["final_accuracy"],
        "best_accuracy": max(r["test_accuracy"] for r in history),
        "rounds": summary["rounds"],
        "bytes_up": summary["bytes_up"],
        "bytes_down": summary["bytes_down"],
        "realised_xi": summary["realised_xi"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--fast-sim", choices=["on", "off", "both"], default="on")
    parser.add_argument("--run-config", default="", help="extra flat keys, e.g. 'rounds=10'")
    parser.add_argument(
        "--federation-config",
        default=README_FEDERATION,
        help=f"flwr run's --federation-config (default: the README's, {README_FEDERATION!r})",
    )
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    extra = {}
    for item in args.run_config.split():
        key, value = item.split("=", 1)
        extra[key] = json.loads(value) if value[:1] not in "'\"" else value.strip("'\"")
    modes = {"on": [True], "off": [False], "both": [True, False]}[args.fast_sim]
    rows = []
    with tempfile.TemporaryDirectory(prefix="fedadc-first-run-") as tmp:
        out = Path(tmp)
        sim = LocalSimulation(out / "flwr-home")
        try:
            for seed in args.seeds:
                for fast in modes:
                    row = one_run(sim, seed, fast, out, extra, args.federation_config)
                    row["load"] = os.getloadavg()[0]
                    rows.append(row)
                    print(
                        f"seed {seed} fast-sim {str(fast).lower():5s} | {row['wall_s']:6.1f} s "
                        f"| final acc {row['final_accuracy']:.4f} (best "
                        f"{row['best_accuracy']:.4f}) | up {row['bytes_up'] / 1e6:.1f} MB "
                        f"down {row['bytes_down'] / 1e6:.1f} MB | xi {row['realised_xi']:.4f} "
                        f"| load {row['load']:.1f}",
                        flush=True,
                    )
        finally:
            sim.stop()
    for fast in modes:
        sel = [r for r in rows if r["fast_sim"] == fast]
        accs = [r["final_accuracy"] for r in sel]
        walls = [r["wall_s"] for r in sel]
        print(
            f"fast-sim {str(fast).lower():5s}: final accuracy mean {statistics.mean(accs):.4f} "
            f"min {min(accs):.4f} | wall mean {statistics.mean(walls):.1f} s "
            f"max {max(walls):.1f} s over seeds {args.seeds}"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
