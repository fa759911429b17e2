"""What ADC adds to one client step: head forward + compression + head backward.

Usage:  python benchmarks/client_step.py [--batch-size 128] [--reps 7] [--device cpu|cuda]

Variants run interleaved (A, B, C, A, B, C, ...) so that machine noise hits all of them
alike; the medians and the ratios to the uncompressed step are printed. The head is the
DeiT-T client head (patch embedding + 3 blocks, n = 197 tokens, d = 192) at 224 pixels.
The paper reports ADC at about +5 % client FLOPs; the goal here is <= 5 % client time.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from fedadc import create_compressor, split_vit


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--xi", type=float, default=0.1)
    p.add_argument("--model", default="deit_tiny_patch16_224")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    head, _, spec = split_vit(args.model, 3, num_classes=100)
    head.to(device).train()
    images = torch.randn(args.batch_size, 3, 224, 224, device=device)
    labels = torch.randint(0, 100, (args.batch_size,), device=device)
    variants = {
        "base": create_compressor("identity", spec),
        "adc/torch": create_compressor("adc", spec, xi=args.xi, kmeans_backend="torch"),
        "adc/sklearn": create_compressor("adc", spec, xi=args.xi, kmeans_backend="sklearn"),
    }
    gen = torch.Generator(device="cpu").manual_seed(0)

    def step(compressor) -> tuple[float, float]:
        _sync(device)
        t0 = time.perf_counter()
        out = head(images)
        _sync(device)
        t1 = time.perf_counter()
        plan = compressor.make_plan(out.tokens.detach(), out.cls_attention, labels, gen)
        enc = compressor.encode(out.tokens, labels, plan)
        _sync(device)
        t2 = time.perf_counter()
        torch.autograd.backward(enc.sent, torch.ones_like(enc.sent))
        _sync(device)
        t3 = time.perf_counter()
        head.zero_grad(set_to_none=True)
        return t3 - t0, t2 - t1

    for compressor in variants.values():  # warm-up
        step(compressor)
    totals: dict[str, list[float]] = {k: [] for k in variants}
    encodes: dict[str, list[float]] = {k: [] for k in variants}
    for rep in range(args.reps):
        for name, compressor in variants.items():
            total, enc = step(compressor)
            totals[name].append(total)
            encodes[name].append(enc)
        print(f"rep {rep + 1}/{args.reps} done", flush=True)

    base = statistics.median(totals["base"])
    t, k = variants["adc/torch"].sizes(args.batch_size)
    print(
        f"\nclient step, {args.model} head (split 3), B={args.batch_size}, n={spec.num_tokens}, "
        f"d={spec.dim}, ADC xi={args.xi} (T={t}, k={k}), device={device}, "
        f"threads={torch.get_num_threads()}, reps={args.reps}"
    )
    print(
        f"{'variant':<12} {'step ms':>10} {'step / base':>12} {'plan+encode ms':>15} "
        f"{'plan+encode / base step':>24}"
    )
    for name in variants:
        med = statistics.median(totals[name])
        enc = statistics.median(encodes[name])
        print(
            f"{name:<12} {1000 * med:>10.2f} {med / base:>12.4f} {1000 * enc:>15.2f} "
            f"{enc / base:>24.4f}"
        )
    print(
        "\n'step / base' compares whole steps (noisy on shared machines); 'plan+encode / base"
        " step' is ADC's own added work (K-means, merge, token selection) per client step."
    )


if __name__ == "__main__":
    main()
