"""ADC variants at an equal byte budget: the paper's ADC against within-class clustering,
size-weighted loss, and both, on the embedded digits and a generated imagefolder set.

Usage:  python benchmarks/adc_variants.py [--seeds 0 1 2] [--base federation.head_momentum=0.9]

Arms (options of the one ``adc`` method; the paper's behaviour is the default):

- ``paper``: ``method.params.cluster=all method.params.weighting=uniform``
- ``within_class``: K-means never mixes classes while there are enough clusters
- ``size``: each merged sample's loss weighted by the number of samples it holds
- ``within_class+size``: both

Data sets: ``digits`` (embedded) and ``shapes``, a 28x28 grayscale imagefolder of ten drawn
shapes written by ``benchmarks/normalization.py``'s generator into ``--data-dir`` (or a temp
folder) and read back through ``data=imagefolder data.path=...``, the generic path a user
would take. Every arm of a data set gets the same byte budget: ``federation.budget_epochs``
uncompressed epochs of activation + gradient bytes (``budget_scope=activations``). The
head-weight transfers are left out of the budget because they do not depend on the ADC
variant (same model, same rounds per step count) and on these micro models would dominate
it; the all-in bytes are printed too. ``federation.rounds`` is only a cap: each run must
stop on the budget, and its stop reason is printed.

The runs are the in-process reference (``train_reference``, the math of ``flwr run .``),
one torch thread each; ``--jobs 2`` runs two at a time in spawned processes (results do not
depend on it). Prints one line per run, then a markdown table per data set: final test
accuracy (uncompressed evaluation, the paper's protocol) mean / min / max over seeds, steps,
realised xi, bytes, and each arm's ratio to the paper arm.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from normalization import write_shapes  # the sibling benchmark's generator

from fedadc.config import compose
from fedadc.federated.reference import train_reference
from fedadc.wire import Kind

ARMS: dict[str, list[str]] = {
    "paper": ["method.params.cluster=all", "method.params.weighting=uniform"],
    "within_class": ["method.params.cluster=within_class", "method.params.weighting=uniform"],
    "size": ["method.params.cluster=all", "method.params.weighting=size"],
    "within_class+size": ["method.params.cluster=within_class", "method.params.weighting=size"],
}


@dataclass
class Outcome:
    dataset: str
    arm: str
    seed: int
    accuracy: float
    stop_reason: str
    rounds: int
    steps: int
    payload_bytes: int
    """Activation bytes up + gradient bytes down (what the budget charges)."""
    sizes_bytes: int
    """Index bytes up: the int16 cluster sizes of ``weighting=size`` (outside the budget)."""
    total_bytes: int
    realised_xi: float
    cpu_s: float


def overrides(dataset: str, arm: str, seed: int, args: argparse.Namespace, path: str) -> list[str]:
    """The full Hydra override list of one run: data set, shared settings, base, arm."""
    data = {
        "digits": ["data=digits", f"federation.budget_epochs={args.digits_budget}"],
        "shapes": [
            "data=imagefolder",
            f"data.path={path}",
            "model.kwargs.patch_size=4",
            f"federation.budget_epochs={args.shapes_budget}",
        ],
    }[dataset]
    common = [
        "model=vit_micro",
        "method=adc",
        "xi=0.1",
        f"federation.local_steps={args.local_steps}",
        f"federation.rounds={args.max_rounds}",  # a cap: the budget must stop every run
        "federation.budget_scope=activations",
        f"seed={seed}",
        "threads=1",
    ]
    return [*data, *common, *args.base, *ARMS[arm]]


def run_one(dataset: str, arm: str, seed: int, hydra: list[str]) -> Outcome:
    logging.basicConfig(level=logging.WARNING)
    start = time.process_time()
    result = train_reference(compose(hydra))
    ledger = result.server.ledger  # type: ignore[union-attr]
    return Outcome(
        dataset=dataset,
        arm=arm,
        seed=seed,
        accuracy=result.final_accuracy,
        stop_reason=result.stop_reason,
        rounds=len(result.history),
        steps=sum(1 for r in ledger.records if r.direction == "up" and r.baseline_bytes),
        payload_bytes=ledger.total_bytes("up", Kind.ACTIVATIONS)
        + ledger.total_bytes("down", Kind.GRADIENTS),
        sizes_bytes=ledger.total_bytes("up", Kind.INDICES),
        total_bytes=ledger.total_bytes(),
        realised_xi=ledger.realised_xi(),
        cpu_s=time.process_time() - start,
    )


def line(o: Outcome) -> str:
    return (
        f"{o.dataset:6s} {o.arm:17s} seed {o.seed}  acc {o.accuracy:.3f}  stop {o.stop_reason:6s} "
        f"rounds {o.rounds:3d} steps {o.steps:4d}  payload {o.payload_bytes / 1e6:6.2f} MB "
        f"sizes {o.sizes_bytes / 1e3:5.1f} kB all-in {o.total_bytes / 1e6:6.2f} MB "
        f"xi {o.realised_xi:.4f}  cpu {o.cpu_s:5.1f} s"
    )


def table(dataset: str, outcomes: list[Outcome], arms: list[str]) -> list[str]:
    """Markdown rows for one data set; ratios are arm mean / paper mean."""
    mine = {arm: [o for o in outcomes if o.dataset == dataset and o.arm == arm] for arm in arms}
    paper = statistics.fmean(o.accuracy for o in mine[arms[0]])
    rows = [
        f"| arm | final acc mean | min | max | ratio to {arms[0]} | steps | realised xi | "
        "payload MB | sizes kB | all-in MB | stop |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for arm in arms:
        runs = mine[arm]
        acc = [o.accuracy for o in runs]
        stops = ",".join(sorted({o.stop_reason for o in runs}))
        rows.append(
            f"| {arm} | {statistics.fmean(acc):.3f} | {min(acc):.3f} | {max(acc):.3f} | "
            f"{statistics.fmean(acc) / paper:.3f} | "
            f"{statistics.fmean(o.steps for o in runs):.0f} | "
            f"{statistics.fmean(o.realised_xi for o in runs):.4f} | "
            f"{statistics.fmean(o.payload_bytes for o in runs) / 1e6:.2f} | "
            f"{statistics.fmean(o.sizes_bytes for o in runs) / 1e3:.1f} | "
            f"{statistics.fmean(o.total_bytes for o in runs) / 1e6:.2f} | {stops} |"
        )
    return rows


def _load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--arms", nargs="+", choices=list(ARMS), default=list(ARMS))
    p.add_argument(
        "--datasets", nargs="+", choices=["digits", "shapes"], default=["digits", "shapes"]
    )
    p.add_argument(
        "--base",
        nargs="*",
        default=["federation.head_momentum=0.9"],
        help="Hydra overrides every arm shares (the run defaults under test)",
    )
    p.add_argument("--digits-budget", type=float, default=1.5, help="uncompressed epochs")
    p.add_argument("--shapes-budget", type=float, default=1.2, help="uncompressed epochs")
    p.add_argument("--local-steps", type=int, default=8)
    p.add_argument("--max-rounds", type=int, default=1000)
    p.add_argument("--train-per-class", type=int, default=100)
    p.add_argument("--test-per-class", type=int, default=30)
    p.add_argument("--data-dir", type=Path, default=None, help="where to write shapes")
    p.add_argument("--jobs", type=int, default=1, help="runs at a time (spawned processes)")
    args = p.parse_args()
    print("base overrides (all arms):", " ".join(args.base) or "(none)")
    print(f"load average at start: {_load()}", flush=True)
    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = (args.data_dir or Path(tmp)) / "shapes"
        path = ""
        if "shapes" in args.datasets:
            path = str(write_shapes(root, args.train_per_class, args.test_per_class))
            print(f"shapes written to {path}", flush=True)
        jobs = [
            (d, a, s, overrides(d, a, s, args, path))
            for d in args.datasets
            for s in args.seeds
            for a in args.arms
        ]
        print("one run:", " ".join(jobs[0][3]), flush=True)
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(args.jobs, mp_context=context) as pool:
            futures = [pool.submit(run_one, *job) for job in jobs]
            outcomes = []
            for future in futures:
                outcomes.append(future.result())
                print(line(outcomes[-1]), flush=True)
    not_budget = [o for o in outcomes if o.stop_reason != "budget"]
    for dataset in args.datasets:
        budget = args.digits_budget if dataset == "digits" else args.shapes_budget
        print(
            f"\n{dataset}: vit_micro, ADC xi=0.1, sfl, 10 Dirichlet(0.5) clients, B=32, "
            f"{args.local_steps} local steps, budget {budget} uncompressed epochs of activation + "
            f"gradient bytes, seeds {args.seeds}, base {' '.join(args.base) or '(none)'}"
        )
        print("\n".join(table(dataset, outcomes, args.arms)))
    cpu = sum(o.cpu_s for o in outcomes)
    print(f"\nruns stopped by something other than the budget: {len(not_budget)}")
    print(f"total CPU {cpu:.0f} s in runs, wall {time.perf_counter() - began:.0f} s")
    print(f"load average at end: {_load()}")


if __name__ == "__main__":
    main()
