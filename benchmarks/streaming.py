"""Frozen-head streaming against exact split learning: wall time, bytes and messages per epoch.

Three arms on the embedded digits (vit_micro, ``--method`` at xi = 0.1, default ADC; 2
clients with IID partitions, B = 32, ``--local-steps`` per round: a round is about one
epoch):

* ``frozen S=all``: ``model.head_trainable=false``, all local steps in one message;
* ``frozen S=1``: the same run, one step per message (bit-identical results, tested);
* ``trainable S=1``: exact split learning, gradients back, head upload and FedAvg.

Each arm runs on up to three transports (``--transports``), one after the other:

* ``inprocess``: the in-process reference (function calls);
* ``simulation``: a real ``flwr run`` on a private local SuperLink (fast-sim on, 1 worker);
* ``deployment``: a loopback SuperLink + 2 warm SuperNodes (``fedadc-supernode``, insecure;
  ``strategies/local_deployment.py``), one ``flwr run`` per arm on the same processes.

Per arm: training seconds per epoch (the round loop's training phase, ``step_s x steps`` of
each round's metrics, rounds 2.. since round 1 holds start-up; evaluation excluded), bytes
up and down per epoch (the ledger), messages per epoch (server to one client and back
counts one; in-process counted, elsewhere the same protocol) and the final test accuracy.
The frozen head is the model's random initialisation (nothing is pretrained on digits), so
its accuracy only shows that the tail learns on fixed features; a real frozen head is a
pretrained backbone.

    python benchmarks/streaming.py                                    # all three transports
    python benchmarks/streaming.py --transports inprocess --rounds 6
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"

from fedadc.config import compose  # noqa: E402
from fedadc.federated import InProcessTransport, rounds_for  # noqa: E402
from fedadc.federated.build import load_data  # noqa: E402
from strategies.launcher import LocalSimulation, run_config_text  # noqa: E402
from strategies.local_deployment import LocalDeployment  # noqa: E402
from strategies.run_config import overrides_from_flower  # noqa: E402

ARMS = {  # name -> (steps-per-message, head trainable)
    "frozen S=all": (0, False),
    "frozen S=1": (1, False),
    "trainable S=1": (1, True),
}
NODES = 2


class CountingTransport(InProcessTransport):
    def __init__(self, run) -> None:
        super().__init__(run)
        self.messages = 0

    def exchange(self, messages):
        self.messages += len(messages)
        return super().exchange(messages)


def flat_config(args: argparse.Namespace, s: int, trainable: bool) -> dict:
    overrides = "partition=iid threads=1"
    if not trainable:
        overrides += " model.head_trainable=false"
    return {
        "num-clients": NODES,
        "rounds": args.rounds,
        "local-steps": args.local_steps,
        "steps-per-message": s,
        "batch-size": args.batch_size,
        "budget-epochs": 0,  # no budget: the same rounds for every arm
        "seed": args.seed,
        "method": args.method,
        "overrides": overrides,
    }


def messages_per_round(local_steps: int, s: int, trainable: bool) -> int:
    """Round trips per client per round: ceil(L/S), plus the finish message when trained."""
    return math.ceil(local_steps / (s or local_steps)) + (1 if trainable else 0)


def figures(rows: list[dict], epochs_per_round: float, extra: dict) -> dict:
    measured = rows[1:] if len(rows) > 1 else rows
    train_s = sum(r["step_s"] * r["steps"] for r in measured)
    last = rows[-1]
    return {
        "s_per_epoch": train_s / (len(measured) * epochs_per_round),
        "up_per_epoch": last["bytes_up"] / (len(rows) * epochs_per_round),
        "down_per_epoch": last["bytes_down"] / (len(rows) * epochs_per_round),
        "accuracy": last["test_accuracy"],
        **extra,
    }


def run_inprocess(flat: dict) -> tuple[list[dict], int]:
    run = compose(overrides_from_flower(flat))
    transport = CountingTransport(run)
    result = rounds_for(run)(run, transport).run()  # the loop pins run.threads
    return result.history, transport.messages


def read_rows(results: Path) -> tuple[list[dict], float]:
    (summary,) = results.glob("*/summary.json")
    rows = [json.loads(x) for x in (summary.parent / "metrics.jsonl").open()]
    return rows, json.loads(summary.read_text())["final_accuracy"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--local-steps", type=int, default=22)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--method", default="adc", help="any method but bottlenet (xi 0.1)")
    p.add_argument(
        "--transports",
        nargs="+",
        default=["inprocess", "simulation", "deployment"],
        choices=["inprocess", "simulation", "deployment"],
    )
    p.add_argument("--json", type=Path, help="also write the rows here")
    args = p.parse_args()
    first = compose(overrides_from_flower(flat_config(args, 1, True)))
    n_train = len(load_data(first).train)
    epochs_per_round = NODES * args.local_steps * args.batch_size / n_train
    rows: list[dict] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fedadc-streaming-") as tmp:
        work = Path(tmp)
        for transport in args.transports:
            deployment = None
            simulation = None
            try:
                if transport == "deployment":
                    deployment = LocalDeployment(work / "deployment")
                    deployment.start_superlink()
                    for k in range(NODES):
                        deployment.start_supernode(k, NODES)
                    deployment.wait_online(NODES, timeout=300)
                if transport == "simulation":
                    simulation = LocalSimulation(work / "flwr-home")
                for arm, (s, trainable) in ARMS.items():
                    flat = flat_config(args, s, trainable)
                    expected = (
                        NODES * args.rounds * messages_per_round(args.local_steps, s, trainable)
                    )
                    t0 = time.perf_counter()
                    if transport == "inprocess":
                        history, counted = run_inprocess(flat)
                        if counted != expected:
                            raise RuntimeError(f"{arm}: {counted} messages, want {expected}")
                    else:
                        results = work / f"{transport}-{arm.replace(' ', '_')}"
                        results.mkdir()
                        if deployment is not None:
                            deployment.run(flat, results, timeout=1800)
                        else:
                            assert simulation is not None
                            text = f'{run_config_text(flat)} results-dir="{results}"'
                            done = simulation.run(
                                ROOT,
                                text,
                                f"num-supernodes={NODES} client-resources-num-cpus=2",
                                timeout=1800,
                                capture_output=True,
                                text=True,
                            )
                            if done.returncode != 0:
                                raise RuntimeError(done.stdout[-3000:] + done.stderr[-3000:])
                        history, _ = read_rows(results)
                    command_s = time.perf_counter() - t0
                    row = figures(
                        history,
                        epochs_per_round,
                        {
                            "transport": transport,
                            "arm": arm,
                            "messages_per_epoch": expected / (args.rounds * epochs_per_round),
                            "command_s": command_s,
                            "load": os.getloadavg()[0],
                        },
                    )
                    rows.append(row)
                    print(
                        f"{transport:<10} {arm:<14} {row['s_per_epoch']:7.2f} s/epoch "
                        f"up {row['up_per_epoch'] / 1e6:6.2f} MB down "
                        f"{row['down_per_epoch'] / 1e6:6.2f} MB acc {row['accuracy']:.3f} "
                        f"({command_s:.0f} s, load {row['load']:.1f})",
                        flush=True,
                    )
            finally:
                if deployment is not None:
                    deployment.stop()
                if simulation is not None:
                    simulation.stop()
    report(rows, args, n_train, epochs_per_round, time.perf_counter() - started)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


def report(
    rows: list[dict], args: argparse.Namespace, n_train: int, per_round: float, total: float
) -> None:
    print(
        f"\ndigits ({n_train} train images), vit_micro split 3, {args.method} xi 0.1, "
        f"{NODES} IID clients, B={args.batch_size}, {args.local_steps} local steps per round "
        f"({per_round:.2f} epochs), {args.rounds} rounds, seed {args.seed}; "
        f"{datetime.date.today()}, {platform.machine()}, {os.cpu_count()} cores, "
        f"whole benchmark {total:.0f} s"
    )
    print(
        "| transport | arm | train s / epoch | x vs trainable S=1 | MB up / epoch | "
        "MB down / epoch | messages / epoch | final accuracy | command s | load |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        base = next(
            b["s_per_epoch"]
            for b in rows
            if b["transport"] == r["transport"] and b["arm"] == "trainable S=1"
        )
        print(
            f"| {r['transport']} | {r['arm']} | {r['s_per_epoch']:.2f} | "
            f"{r['s_per_epoch'] / base:.2f} | {r['up_per_epoch'] / 1e6:.2f} | "
            f"{r['down_per_epoch'] / 1e6:.2f} | {r['messages_per_epoch']:.1f} | "
            f"{r['accuracy']:.3f} | {r['command_s']:.0f} | {r['load']:.1f} |"
        )


if __name__ == "__main__":
    main()
