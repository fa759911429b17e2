"""Accuracy against steps_per_message (S): what batching S steps per message costs.

Usage:  python benchmarks/accuracy_vs_steps_per_message.py [--rounds 20] [--local-steps 32]

Runs the in-process reference (the same round loop and math as `flwr run .`) on the
embedded digits with one client in `sl` mode (the paper's setting: exact split learning
at S = 1), ADC xi = 0.1, for S = 1, 4, 16 and all local steps, with both ways of applying
the S stored gradients (one accumulated head step, or S stale head steps). Prints the
final and best test accuracy per setting.
"""

from __future__ import annotations

import argparse
import logging
import time

from fedadc.config import compose
from fedadc.federated.reference import train_reference


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--local-steps", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    settings = [(1, "accumulated")]
    for s in (4, 16, 0):
        settings += [(s, "accumulated"), (s, "stale")]
    rows = []
    for s, update in settings:
        run = compose(
            [
                "federation=sl",
                "federation.num_clients=1",
                f"federation.rounds={args.rounds}",
                f"federation.local_steps={args.local_steps}",
                f"federation.steps_per_message={s}",
                f"federation.head_update={update}",
                "federation.budget_epochs=null",
                f"seed={args.seed}",
                "threads=1",
            ]
        )
        start = time.perf_counter()
        result = train_reference(run)
        acc = [h["test_accuracy"] for h in result.history]
        rows.append((s or args.local_steps, update, acc[-1], max(acc), time.perf_counter() - start))
        print(
            f"S={s or args.local_steps:>3} {update:<11} final {acc[-1]:.3f} best {max(acc):.3f}",
            flush=True,
        )
    steps = args.rounds * args.local_steps
    print(
        f"\ndigits, vit_micro, ADC xi=0.1, sl mode with 1 client, B=32, {steps} steps, "
        f"seed {args.seed}"
    )
    print("| S | head update | final accuracy | best accuracy | wall s |")
    print("|---|---|---|---|---|")
    for s, update, final, best, wall in rows:
        print(f"| {s} | {update} | {final:.3f} | {best:.3f} | {wall:.0f} |")


if __name__ == "__main__":
    main()
