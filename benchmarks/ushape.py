"""U-shaped vs standard split learning: bytes and messages per step, and accuracy.

Usage:  python benchmarks/ushape.py [--seeds 0] [--rounds 20] [--local-steps 8]

Runs the in-process reference (the round loop, messages and bytes of `flwr run .`) on
the embedded digits with the default first run (10 Dirichlet(0.5) clients, vit_micro,
SFL, FedAvgM heads), for identity and ADC xi = 0.1, in both shapes:

1. equal steps (the given rounds x local steps): final accuracy, bytes per client step by
   direction and kind, messages per client step (counted at the transport: each message
   one way is one);
2. equal bytes: U-shape again with the split-point bytes (activations and gradients, both
   ways: ``budget_scope=activations``) capped at what its standard run spent, so the extra
   return trip costs it steps.

U-shape runs ``tail_update=joint`` (its middle steps once per exchange on every client's
outputs); the standard runs are shown with both tail updates, since the default
(``per_client``) takes N tail steps per client step. Prints one line per run, then a
markdown table (docs/results/ushape.md holds a recorded one).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from dataclasses import dataclass

from fedadc.config import compose
from fedadc.federated import InProcessTransport, rounds_for
from fedadc.federated.rounds import RoundsResult
from fedadc.wire import Kind


class CountingTransport(InProcessTransport):
    """Counts messages: one per client and direction of every exchange."""

    def __init__(self, run) -> None:
        super().__init__(run)
        self.messages = 0

    def exchange(self, messages):
        replies = super().exchange(messages)
        self.messages += len(messages) + len(replies)
        return replies


@dataclass
class Outcome:
    label: str
    seed: int
    accuracy: float
    accuracy_split: float
    client_steps: int
    messages: int
    up_per_step: dict[str, float]
    down_per_step: dict[str, float]
    split_bytes: int
    wall_s: float


def run_one(label: str, overrides: list[str], seed: int, args) -> Outcome:
    run = compose(
        [
            f"federation.rounds={args.rounds}",
            f"federation.local_steps={args.local_steps}",
            f"seed={seed}",
            "results_dir=/tmp/fedadc-bench",
            *overrides,
        ]
    )
    transport = CountingTransport(run)
    started = time.perf_counter()
    result: RoundsResult = rounds_for(run)(run, transport).run()  # pins run.threads
    wall = time.perf_counter() - started
    ledger = result.server.ledger
    steps = sum(int(r["clients"]) for r in result.history) * run.federation.local_steps
    if run.federation.budget_epochs is not None:  # the budget may stop a round early
        steps = sum(1 for r in ledger.records if r.direction == "up" and r.baseline_bytes)
    by_kind = ledger.bytes_by_kind()
    split = ledger.total_bytes(kind=Kind.ACTIVATIONS) + ledger.total_bytes(kind=Kind.GRADIENTS)
    last = result.history[-1]
    return Outcome(
        label,
        seed,
        float(last["test_accuracy"]),
        float(last["test_accuracy_split"]),
        steps,
        transport.messages,
        {k: v / steps for k, v in by_kind["up"].items()},
        {k: v / steps for k, v in by_kind["down"].items()},
        split,
        wall,
    )


def _kb(per_step: dict[str, float], *kinds: str) -> str:
    return f"{sum(per_step.get(k, 0.0) for k in kinds) / 1000:.1f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--local-steps", type=int, default=8)
    args = parser.parse_args(argv)
    logging.getLogger("fedadc").setLevel(logging.WARNING)

    runs: list[tuple[str, list[str]]] = []
    for method in ("identity", "adc"):
        m = [f"method={method}", "xi=0.1"]
        runs += [
            (f"{method} standard per_client", m),
            (f"{method} standard joint", [*m, "federation.tail_update=joint"]),
            (f"{method} U-shape", [*m, "federation=ushape"]),
        ]
    outcomes: list[Outcome] = []
    for seed in args.seeds:
        spent: dict[str, int] = {}
        for label, overrides in runs:
            out = run_one(label, overrides, seed, args)
            outcomes.append(out)
            spent[label] = out.split_bytes
            _print(out)
        for method in ("identity", "adc"):  # U-shape at the standard joint run's bytes
            epochs = _epochs_for(spent[f"{method} standard joint"], method, seed, args)
            label = f"{method} U-shape, equal bytes"
            overrides = [
                f"method={method}",
                "xi=0.1",
                "federation=ushape",
                f"federation.budget_epochs={epochs}",
                "federation.budget_scope=activations",
            ]
            out = run_one(label, overrides, seed, args)
            outcomes.append(out)
            _print(out)

    print()
    print(
        "| run | final acc (unc / split) | client steps | messages / step | "
        "up KB / step (act + grad) | down KB / step (act + grad) | split-point MB |"
    )
    print("|---|---|---|---|---|---|---|")
    for label in dict.fromkeys(o.label for o in outcomes):
        group = [o for o in outcomes if o.label == label]
        acc = statistics.mean(o.accuracy for o in group)
        split = statistics.mean(o.accuracy_split for o in group)
        o = group[0]
        print(
            f"| {label} | {acc:.3f} / {split:.3f} | {o.client_steps} | "
            f"{o.messages / o.client_steps:.2f} | "
            f"{_kb(o.up_per_step, 'activations', 'gradients')} | "
            f"{_kb(o.down_per_step, 'activations', 'gradients')} | {o.split_bytes / 1e6:.2f} |"
        )
    return 0


def _epochs_for(split_bytes: int, method: str, seed: int, args) -> float:
    """The budget (in uncompressed epochs, activations scope) equal to ``split_bytes``."""
    from fedadc.federated.build import load_data
    from fedadc.federated.server import FederatedServer

    run = compose([f"method={method}", "xi=0.1", f"seed={seed}"])
    server = FederatedServer(run, load_data(run))
    per_epoch = 2 * len(server.data.train) * server.spec.uncompressed_bytes(1)
    return split_bytes / per_epoch


def _print(o: Outcome) -> None:
    print(
        f"{o.label:34s} seed {o.seed}: acc {o.accuracy:.3f} (split {o.accuracy_split:.3f}) "
        f"steps {o.client_steps} messages/step {o.messages / o.client_steps:.2f} "
        f"up {_kb(o.up_per_step, 'activations', 'gradients')} KB/step "
        f"down {_kb(o.down_per_step, 'activations', 'gradients')} KB/step "
        f"({o.wall_s:.0f} s)",
        flush=True,
    )


if __name__ == "__main__":
    raise SystemExit(main())
