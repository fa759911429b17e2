"""What the server can read from ADC's payloads, measured during real training.

Usage:  python benchmarks/server_view.py [--xi 0.05 0.1 0.25 0.5] [--rounds 5]

Runs the in-process federated loop (the same code as ``flwr run``) on the embedded digits
with ADC at each xi and records, for every payload, what the client had (its batch labels
and ADC's plan) next to what the server received (activations T x k x d, soft labels T x C,
``batch_size``). From the payload alone, the script then plays the server:

* cluster sizes: a merged label is the mean of its members' one-hot labels, so its entries
  are multiples of 1/size; the smallest size in 1..B that makes every entry integral
  (tolerance 1e-4) is the server's guess (a lower bound: a cluster of labels a, a, b, b
  reads as size 2; a pure cluster as size 1); the share of clusters where it is right;
* the batch's label histogram: the guessed sizes x soft labels, scaled to the known batch
  size B; its total-variation distance to the client's true histogram (0: exact, 1:
  disjoint), and the share of payloads where the rounded estimate is exact; for scale, the
  same distance for the plain mean of the soft labels (every cluster weighted alike);
* singletons: clusters of one sample (the server holds that sample's kept tokens and label
  exactly, as with no merging);
* pure clusters: all members share one label (the soft label is one-hot).

Only measured facts are printed; nothing here is an attack on the activations themselves.
ADC's ``encode`` is wrapped at class level to see the client's side (instrumentation only).
"""

from __future__ import annotations

import argparse
import datetime
import logging
import statistics
import time
from dataclasses import dataclass, field

import torch

from fedadc.compression.adc import ADC
from fedadc.config import compose
from fedadc.federated.reference import train_reference
from fedadc.wire.payload import Payload

TOLERANCE = 1e-4


@dataclass
class Seen:
    """Per payload: the client's truth and the server's view."""

    labels: torch.Tensor  # B hard labels (client)
    sizes: torch.Tensor  # T true cluster sizes (client)
    soft: torch.Tensor  # T x C soft labels (wire)
    batch: int  # Payload.batch_size (wire)
    tokens: int  # k (wire)


@dataclass
class Capture:
    seen: list[Seen] = field(default_factory=list)


CAPTURE = Capture()
_encode = ADC.encode


def _recording_encode(self: ADC, tokens, labels, plan):  # type: ignore[no-untyped-def]
    encoded = _encode(self, tokens, labels, plan)
    wire = Payload.from_bytes(encoded.payload.to_bytes())  # what the server decodes
    num_groups = plan["kept_tokens"].shape[0]
    CAPTURE.seen.append(
        Seen(
            labels=labels.detach().cpu(),
            sizes=torch.bincount(plan["assignments"].cpu(), minlength=num_groups),
            soft=wire["labels"].float(),
            batch=int(wire.batch_size),
            tokens=int(wire["activations"].shape[1]),
        )
    )
    return encoded


ADC.encode = _recording_encode  # type: ignore[method-assign]


def infer_sizes(soft: torch.Tensor, batch: int) -> torch.Tensor:
    """The server's guess of each cluster's size from its soft label alone."""
    sizes = torch.zeros(soft.shape[0], dtype=torch.long)
    candidates = torch.arange(1, batch + 1, dtype=torch.float64)
    for t, row in enumerate(soft.double()):
        scaled = candidates[:, None] * row[None, :]
        integral = (scaled - scaled.round()).abs().max(dim=1).values < TOLERANCE
        sizes[t] = int(candidates[integral.nonzero()[0, 0]].item()) if integral.any() else 0
    return sizes


def total_variation(estimate: torch.Tensor, truth: torch.Tensor) -> float:
    return 0.5 * float((estimate / estimate.sum() - truth / truth.sum()).abs().sum())


def analyse(seen: list[Seen], num_tokens: int) -> dict[str, float]:
    sizes_right = hist_right = singletons = pure = clusters = 0
    tv_guess: list[float] = []
    tv_mean: list[float] = []
    for s in seen:
        guess = infer_sizes(s.soft, s.batch)
        sizes_right += int((guess == s.sizes).sum())
        weighted = (guess[:, None].double() * s.soft.double()).sum(0)
        estimate = weighted * s.batch / weighted.sum()
        truth = torch.bincount(s.labels, minlength=s.soft.shape[1]).double()
        hist_right += int(torch.equal(estimate.round(), truth))
        tv_guess.append(total_variation(estimate, truth))
        tv_mean.append(total_variation(s.soft.double().mean(0), truth))
        singletons += int((s.sizes == 1).sum())
        pure += int(((s.soft - 1).abs() < TOLERANCE).any(dim=1).sum())
        clusters += len(s.sizes)
    n = len(seen)
    return {
        "payloads": n,
        "B": statistics.mean(s.batch for s in seen),
        "T": clusters / n,
        "k/n": statistics.mean(s.tokens for s in seen) / num_tokens,
        "sizes inferred": sizes_right / clusters,
        "histogram exact": hist_right / n,
        "histogram TV": statistics.mean(tv_guess),
        "TV, plain mean": statistics.mean(tv_mean),
        "singleton clusters": singletons / clusters,
        "pure clusters": pure / clusters,
        "samples per cluster": statistics.mean(s.batch for s in seen) * n / clusters,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--xi", type=float, nargs="+", default=[0.05, 0.1, 0.25, 0.5])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run")
    args = p.parse_args()
    logging.getLogger("fedadc").setLevel(logging.WARNING)
    started = time.time()
    rows = []
    for xi in args.xi:
        run = compose(
            [
                "method=adc",
                f"xi={xi}",
                "data=digits",
                "model=vit_micro",
                f"federation.rounds={args.rounds}",
                f"seed={args.seed}",
                "threads=1",
                *args.overrides,
            ]
        )
        CAPTURE.seen.clear()
        result = train_reference(run)
        num_tokens = result.server.spec.num_tokens  # type: ignore[union-attr]
        row = analyse(CAPTURE.seen, num_tokens)
        row["xi"], row["accuracy"] = xi, result.final_accuracy
        rows.append(row)
        print(f"xi={xi}: {len(CAPTURE.seen)} payloads ({time.time() - started:.0f} s)", flush=True)
    columns = [
        "xi",
        "payloads",
        "B",
        "T",
        "k/n",
        "samples per cluster",
        "singleton clusters",
        "pure clusters",
        "sizes inferred",
        "histogram exact",
        "histogram TV",
        "TV, plain mean",
        "accuracy",
    ]
    print("\n| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        cells = [f"{row[c]:g}" if c in ("xi", "payloads") else f"{row[c]:.3f}" for c in columns]
        print("| " + " | ".join(cells) + " |")
    print(
        f"\n{datetime.date.today()}; digits, vit_micro, seed {args.seed}, "
        f"{args.rounds} rounds; {time.time() - started:.0f} s"
    )


if __name__ == "__main__":
    main()
