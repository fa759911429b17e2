"""Accuracy per byte of the payload precision stacked on ADC: float32 / float16 / int8.

Usage:  python benchmarks/payload_precision.py [--budget-epochs 0.5] [--seeds 0 1 2]

Runs the in-process reference (the round loop and math of `flwr run .`) on the embedded
digits, vit_micro, one client in `sl` mode (exact split learning, S = 1), ADC xi = 0.1,
with activations *and* gradients on the wire in each dtype, at an equal byte budget:
``federation.budget_epochs`` uncompressed epochs of activation + gradient bytes
(``budget_scope=activations``, the paper's accounting; int8's per-row scales count there).
The scope leaves out the head-weight transfers, which precision does not touch and which
on this micro model would otherwise dominate the budget. A cheaper precision buys more
steps within the same bytes. Prints one line per run, then a markdown table: mean (and
min-max) final test accuracy over the seeds, steps, bytes, realised xi, and the accuracy
at the round where float32 ran out (equal steps, so precision's own cost shows).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from dataclasses import dataclass

from fedadc.config import compose
from fedadc.federated.reference import train_reference
from fedadc.wire import Kind


@dataclass
class Outcome:
    dtype: str
    seed: int
    accuracy: float
    accuracy_by_round: dict[int, float]
    steps: int
    payload_bytes: int
    """Activation bytes up + gradient bytes down (what the budget charges)."""
    total_bytes: int
    realised_xi: float
    wall_s: float


def run_one(dtype: str, seed: int, args: argparse.Namespace) -> Outcome:
    run = compose(
        [
            "data=digits",
            "model=vit_micro",
            "method=adc",
            "xi=0.1",
            "federation=sl",
            "federation.num_clients=1",
            f"federation.batch_size={args.batch_size}",
            f"federation.local_steps={args.local_steps}",
            "federation.rounds=1000",  # a cap: the budget stops every run first
            f"federation.budget_epochs={args.budget_epochs}",
            "federation.budget_scope=activations",
            f"wire.activation_dtype={dtype}",
            f"wire.gradient_dtype={dtype}",
            f"seed={seed}",
            "threads=1",
        ]
    )
    start = time.perf_counter()
    result = train_reference(run)
    ledger = result.server.ledger
    by_round = {
        int(h["round"]): float(h["test_accuracy"]) for h in result.history if "test_accuracy" in h
    }
    return Outcome(
        dtype=dtype,
        seed=seed,
        accuracy=by_round[max(by_round)],
        accuracy_by_round=by_round,
        steps=sum(1 for r in ledger.records if r.direction == "up" and r.baseline_bytes),
        payload_bytes=ledger.total_bytes("up", Kind.ACTIVATIONS)
        + ledger.total_bytes("down", Kind.GRADIENTS),
        total_bytes=ledger.total_bytes(),
        realised_xi=ledger.realised_xi(),
        wall_s=time.perf_counter() - start,
    )


def spread(values: list[float], fmt: str) -> str:
    mean = statistics.fmean(values)
    return f"{mean:{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--budget-epochs", type=float, default=0.5)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--dtypes", nargs="+", default=["float32", "float16", "int8"])
    p.add_argument("--local-steps", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=32)
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    began = time.perf_counter()
    outcomes: list[Outcome] = []
    for seed in args.seeds:
        for dtype in args.dtypes:
            o = run_one(dtype, seed, args)
            outcomes.append(o)
            print(
                f"seed {seed} {dtype:<8} acc {o.accuracy:.3f} steps {o.steps:4d} "
                f"payload {o.payload_bytes / 1e6:6.2f} MB all-in {o.total_bytes / 1e6:6.2f} MB "
                f"xi {o.realised_xi:.4f} {o.wall_s:5.1f} s",
                flush=True,
            )
    reference = args.dtypes[0]
    stop = {o.seed: max(o.accuracy_by_round) for o in outcomes if o.dtype == reference}
    print(
        f"\ndigits, vit_micro, ADC xi=0.1, sl with 1 client, B={args.batch_size}, "
        f"{args.local_steps} steps a round, budget {args.budget_epochs} uncompressed epochs "
        f"of activation + gradient bytes, seeds {args.seeds}; mean (min-max) over seeds"
    )
    print(
        "| activations + gradients | final accuracy | accuracy at "
        f"{reference}'s last round | steps | payload MB | all-in MB | realised xi | "
        "accuracy per payload MB |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for dtype in args.dtypes:
        mine = [o for o in outcomes if o.dtype == dtype]
        equal_steps = [
            o.accuracy_by_round[max(r for r in o.accuracy_by_round if r <= stop[o.seed])]
            for o in mine
        ]
        print(
            f"| {dtype} | {spread([o.accuracy for o in mine], '.3f')} | "
            f"{spread(equal_steps, '.3f')} | {statistics.fmean(o.steps for o in mine):.0f} | "
            f"{statistics.fmean(o.payload_bytes for o in mine) / 1e6:.2f} | "
            f"{statistics.fmean(o.total_bytes for o in mine) / 1e6:.2f} | "
            f"{statistics.fmean(o.realised_xi for o in mine):.4f} | "
            f"{statistics.fmean(o.accuracy / (o.payload_bytes / 1e6) for o in mine):.3f} |"
        )
    print(f"\ntotal wall time {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
