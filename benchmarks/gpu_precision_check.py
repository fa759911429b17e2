"""Mixed precision on CUDA: fp32 vs bf16 step time and loss (not run in CI).

Usage:  python benchmarks/gpu_precision_check.py [--model deit_tiny_patch16_224]
            [--batch-size 64] [--steps 20] [--device cuda]

Prints "no CUDA: skipped" where CUDA is not available (``--device cpu`` runs it anyway,
slowly, e.g. to check the script itself with ``--model`` small and few ``--steps``).

(a) One split-learning step (``SplitClient.forward`` -> ``SplitServer.step`` ->
    ``SplitClient.backward``, identity method, the model at 224 px split after block 3) on
    one fixed random batch, for ``precision`` fp32 and bf16 from the same seed: median step
    ms over ``--steps`` (after 3 warm-up steps), the ratio, and the loss at the first and
    last step (the batch is memorised, so the loss must fall in both).
(b) The whole pipeline: a 2-round in-process federated run on digits (vit_micro, 2
    clients) on the device with each precision: final accuracy and seconds per step by
    component, from the run's own timing (fedadc.federated.timing).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from fedadc import create_compressor, split_vit
from fedadc.step import SplitClient, SplitServer


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def step_times(args: argparse.Namespace, precision: str) -> tuple[float, float, float]:
    """(median step seconds, first loss, last loss) of ``precision`` on one fixed batch."""
    device = torch.device(args.device)
    torch.manual_seed(0)
    head, tail, spec = split_vit(args.model, 3, num_classes=10)
    head.precision = tail.precision = precision
    head.to(device)
    tail.to(device)
    compressor = create_compressor("identity", spec).to(device)
    client = SplitClient(head, compressor, torch.optim.Adam(head.parameters(), lr=1e-4))
    server = SplitServer(
        tail, compressor, torch.optim.Adam(tail.parameters(), lr=1e-4), device=device
    )
    gen = torch.Generator().manual_seed(1)
    images = torch.randn(args.batch_size, 3, 224, 224, generator=gen).to(device)
    labels = torch.randint(0, 10, (args.batch_size,), generator=gen).to(device)
    times, losses = [], []
    for i in range(3 + args.steps):
        _sync(device)
        started = time.perf_counter()
        gradient, metrics = server.step(client.forward(images, labels))
        client.backward(gradient)
        _sync(device)
        if i >= 3:
            times.append(time.perf_counter() - started)
        losses.append(metrics.loss)
    return statistics.median(times), losses[0], losses[-1]


def pipeline(device: str, precision: str) -> dict[str, float]:
    from fedadc.config import compose
    from fedadc.federated.reference import train_reference
    from fedadc.federated.timing import summarize

    run = compose(
        [
            f"device={device}",
            f"precision={precision}",
            "federation.num_clients=2",
            "federation.rounds=2",
            "federation.local_steps=5",
            "federation.budget_epochs=null",
        ]
    )
    result = train_reference(run)  # writes no run directory
    return {"accuracy": result.final_accuracy, **summarize(result.history)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="deit_tiny_patch16_224")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--device", default="cuda")
    args = p.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA: skipped")
        return
    name = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "cpu"
    print(f"(a) one step, {args.model} split 3, B={args.batch_size}, 224 px, device {name}")
    print(f"{'precision':<10} {'step ms':>9} {'vs fp32':>8} {'first loss':>11} {'last loss':>10}")
    base = None
    for precision in ("fp32", "bf16"):
        median, first, last = step_times(args, precision)
        base = base or median
        print(
            f"{precision:<10} {1000 * median:>9.2f} {median / base:>8.3f} {first:>11.4f} "
            f"{last:>10.4f}"
        )
    print("\n(b) 2 rounds in-process on digits (vit_micro, 2 clients), seconds per step")
    print(
        f"{'precision':<10} {'accuracy':>9} {'s/step':>8} {'client':>8} {'server':>8} {'wait':>8}"
    )
    for precision in ("fp32", "bf16"):
        r = pipeline(args.device, precision)
        print(
            f"{precision:<10} {r['accuracy']:>9.4f} {r['step_s']:>8.4f} {r['step_client_s']:>8.4f}"
            f" {r['step_server_s']:>8.4f} {r['step_wait_s']:>8.4f}"
        )


if __name__ == "__main__":
    main()
