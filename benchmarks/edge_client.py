"""A CPU-only edge client: peak memory and step time of the DeiT-T head at small batches.

Usage:  python benchmarks/edge_client.py [--batch-sizes 8 16 32] [--threads 1 2] [--steps 5]
                                         [--repeat 2]

Each configuration runs in a fresh Python process (peak RSS is per process and never goes
down), which builds the client's side only: the DeiT-T head (patch embedding + blocks
[:split]) from ``split_vit``, Adam over it, and the compressor. One step is what a client
computes per message at ``steps_per_message = 1``: head forward on B random 224 x 224
images, ADC plan + encode, serialization of the payload, then, with a gradient of the sent
shape, ``decode_gradient``, head backward and the optimizer step. The first step is a
warm-up; the median of the rest is the process's figure. The whole grid runs ``--repeat``
times, configurations in a rotating order, and the fastest repetition of each is kept (on
a shared machine the slower ones measured someone else's load).

Peak RSS is ``ru_maxrss`` of the child; "after import" is torch + timm + fedadc loaded
before any model exists, so "peak - import" is what the model and the step add. The
ClientApp in Flower also holds its data partition and decodes its ``context.state``: not
counted here.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import resource
import statistics
import subprocess
import sys
import time


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def child(args: argparse.Namespace) -> None:
    import torch

    from fedadc import Payload, create_compressor, split_vit

    torch.set_num_threads(args.threads)
    after_import = _rss_mib()
    torch.manual_seed(0)
    head, tail, spec = split_vit(args.model, args.split_at, num_classes=100)
    del tail  # a client holds the head only
    params = {"identity": {}, "adc": {"xi": args.xi}}[args.method]
    compressor = create_compressor(args.method, spec, **params)
    optimizer = torch.optim.Adam(head.parameters(), lr=1e-4)
    images = torch.randn(args.batch, 3, 224, 224)
    labels = torch.randint(0, 100, (args.batch,))
    generator = torch.Generator().manual_seed(0)
    times, sizes = [], []
    for _ in range(args.steps + 1):
        t0 = time.perf_counter()
        out = head(images)
        plan = compressor.make_plan(out.tokens.detach(), out.cls_attention, labels, generator)
        enc = compressor.encode(out.tokens, labels, plan)
        data = enc.payload.to_bytes()
        grad = Payload().add("gradients", torch.randn_like(enc.sent), "gradients")
        grad_in = compressor.decode_gradient(Payload.from_bytes(grad.to_bytes()))
        optimizer.zero_grad(set_to_none=True)
        torch.autograd.backward(enc.sent, grad_in)
        optimizer.step()
        times.append(time.perf_counter() - t0)
        sizes.append(len(data))
    print(
        json.dumps(
            {
                "step_ms": 1000 * statistics.median(times[1:]),
                "after_import_mib": after_import,
                "peak_mib": _rss_mib(),
                "payload_bytes": sizes[-1],
                "head_params": sum(p.numel() for p in head.parameters()),
            }
        )
    )


def run_child(args: argparse.Namespace, batch: int, threads: int, method: str) -> dict:
    """One configuration in a fresh process; returns its figures."""
    cmd = [
        sys.executable,
        __file__,
        "--child",
        f"--batch={batch}",
        f"--threads={threads}",
        f"--method={method}",
        f"--steps={args.steps}",
        f"--model={args.model}",
        f"--split-at={args.split_at}",
        f"--xi={args.xi}",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    row = json.loads(out.stdout.strip().splitlines()[-1])
    row.update(batch=batch, threads=threads, method=method)
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 16, 32])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--methods", nargs="+", default=["identity", "adc"])
    p.add_argument("--steps", type=int, default=5, help="timed steps (after one warm-up)")
    p.add_argument("--repeat", type=int, default=2, help="runs of the whole grid")
    p.add_argument("--model", default="deit_tiny_patch16_224")
    p.add_argument("--split-at", type=int, default=3)
    p.add_argument("--xi", type=float, default=0.1)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    p.add_argument("--method", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        args.threads = args.threads[0]
        child(args)
        return
    started = time.time()
    print(
        f"{args.model} head (split at {args.split_at}), ADC xi={args.xi}, {args.steps} timed "
        "steps per configuration, each in a fresh process",
        flush=True,
    )
    grid = [
        (batch, threads, method)
        for batch in args.batch_sizes
        for threads in args.threads
        for method in args.methods
    ]
    best: dict[tuple[int, int, str], dict] = {}
    for rep in range(args.repeat):
        shift = rep * len(grid) // max(args.repeat, 1)
        for batch, threads, method in grid[shift:] + grid[:shift]:
            row = run_child(args, batch, threads, method)
            key = (batch, threads, method)
            if key not in best or row["step_ms"] < best[key]["step_ms"]:
                best[key] = row
            print(
                f"[{rep + 1}/{args.repeat}] B={batch} threads={threads} {method}: "
                f"{row['step_ms']:.0f} ms, peak {row['peak_mib']:.0f} MiB",
                flush=True,
            )
    rows = [best[key] for key in grid]
    base = {(r["batch"], r["threads"]): r for r in rows if r["method"] == "identity"}
    print(
        "\n| B | threads | method | step ms | step / Base | peak RSS MiB | of it after import "
        "| peak - import | payload KB |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        ref = base.get((r["batch"], r["threads"]))
        ratio = f"{r['step_ms'] / ref['step_ms']:.2f}" if ref else "-"
        print(
            f"| {r['batch']} | {r['threads']} | {r['method']} | {r['step_ms']:.0f} | {ratio} "
            f"| {r['peak_mib']:.0f} | {r['after_import_mib']:.0f} "
            f"| {r['peak_mib'] - r['after_import_mib']:.0f} | {r['payload_bytes'] / 1e3:.1f} |"
        )
    print(
        f"\n{datetime.date.today()} {platform.node()} {platform.machine()}; head parameters "
        f"{rows[0]['head_params']:,}; {time.time() - started:.0f} s in all"
    )


if __name__ == "__main__":
    main()
