"""Client and server compute per training step of every method, relative to Base.

Usage:  python benchmarks/compute_overhead.py [--batch-size 128] [--xi 0.1] [--reps 3]

DeiT-T split after block 3 (random init, 100 classes), one batch of B random images. Per
method (``identity`` is Base):

* client step = head forward + ``make_plan`` + ``encode`` + (after the server's reply)
  ``decode_gradient`` + head backward;
* server step = ``receive`` + tail forward + cross-entropy + backward + ``encode_gradient``.

Payloads travel as bytes (``to_bytes``/``from_bytes``) between the two, outside the timers.
Methods run interleaved (the order rotates every repetition) so machine noise hits all of
them alike; medians and ratios to Base are printed, of wall time and of the process's CPU
time (``time.process_time``: on a shared machine the wall time also holds the time spent
waiting for a core, the CPU time does not; with ``--threads 1`` it is free of OpenMP spinning).

FLOPs come from ``torch.utils.flop_counter.FlopCounterMode`` around the same client and
server steps (forward and backward), run once per method before the timed repetitions (it
doubles as the warm-up). torch's counter only knows matmul, convolution and attention
kernels, so three things are handled explicitly:

* fused attention: on the CPU, ``scaled_dot_product_attention`` runs a kernel the counter
  does not know (it counts 0), so the counting pass forces the math backend, which
  decomposes attention into counted batched matmuls;
* K-means (ADC): the counter sees its matmuls (distance cross term, one-hot means) but not
  the direct pairwise distances of k-means++ (``cdist``) nor the elementwise work; we
  replace what it counted inside K-means by an analytic count: ``3 B^2 F`` (k-means++
  pairwise distances) ``+ (iterations + 1) x B x T x F x 3`` (Lloyd assignments and the
  final one; F = n, the attention row), with the iteration count K-means actually ran;
* FFTs (C3-SL): not counted by torch; added analytically, ``2.5 N log2 N`` per real
  transform of length N (half of the complex ``5 N log2 N``).

Elementwise work (quantization, top-k selection, gathers, merges, softmax, norms) is not
counted by anyone here: O(B n d) memory-bound operations, a few flops per element.

Also printed: the head's forward FLOPs as the paper's fvcore script would see them (forward
only, fused attention uncounted) with and without the explicit last block ADC needs, and
ADC's server FLOPs at several xi and splits of xi (``--adc-sweep``, on the meta device).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import math
import platform
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

import fedadc.compression.adc as adc_module
from fedadc import Payload, create_compressor, split_vit
from fedadc.compression.base import Compressor

METHODS = ("identity", "adc", "topk", "randtopk", "c3sl", "bottlenet", "quantization")
aten = torch.ops.aten


# ====================================================================== methods
def method_params(name: str, xi: float) -> dict[str, Any]:
    """Each method's parameters for a target ratio ``xi`` (as the Flower app's ``xi`` key)."""
    return {
        "identity": {},
        "adc": {"xi": xi},
        "topk": {"ratio": xi},
        "randtopk": {"ratio": xi},
        "c3sl": {"group_size": max(1, round(1 / xi))},
        "bottlenet": {"ratio": xi},
        "quantization": {"bits": max(1, round(32 * xi))},
    }[name]


def describe(name: str, compressor: Compressor, batch: int) -> str:
    """Short parameter string for the table."""
    c: Any = compressor
    if name == "adc":
        t, k = c.sizes(batch)
        return f"xi={c.xi:g} T={t} k={k}"
    if name in ("topk", "randtopk"):
        return f"ratio={c.ratio:g}"
    if name == "c3sl":
        return f"R={c.group_size}"
    if name == "bottlenet":
        return f"d'={c.code_dim}"
    if name == "quantization":
        return f"bits={c.bits}"
    return "-"


# ====================================================================== counting helpers
@dataclass
class KMeansCall:
    """One K-means call made by ADC's ``make_plan``."""

    rows: int
    clusters: int
    features: int
    n_iter: int
    counted_flops: int


@dataclass
class Recorder:
    """K-means calls seen while ``counting`` (the wrapper below appends to ``calls``)."""

    counting: bool = False
    calls: list[KMeansCall] = field(default_factory=list)


RECORDER = Recorder()
_kmeans = adc_module.kmeans


def _recording_kmeans(x: torch.Tensor, num_clusters: int, **kwargs: Any) -> Any:
    """``fedadc.kmeans.kmeans`` that records its iterations and torch-counted FLOPs."""
    if not RECORDER.counting:
        return _kmeans(x, num_clusters, **kwargs)
    counter = FlopCounterMode(display=False)
    with counter:
        result = _kmeans(x, num_clusters, **kwargs)
    rows, features = x.shape
    RECORDER.calls.append(
        KMeansCall(rows, num_clusters, features, result.n_iter, counter.get_total_flops())
    )
    return result


adc_module.kmeans = _recording_kmeans  # ADC looks kmeans up in its module at call time


def kmeans_analytic_flops(call: KMeansCall, n_iter: int | None = None) -> int:
    """k-means++ pairwise distances + (iterations + 1) assignments, 3 flops per term."""
    b, t, f = call.rows, call.clusters, call.features
    iters = call.n_iter if n_iter is None else n_iter
    return 3 * b * b * f + (iters + 1) * b * t * f * 3


class FFTCounter(TorchDispatchMode):
    """Analytic FLOPs of the FFTs run under it: ``2.5 N log2 N`` per real transform."""

    def __init__(self) -> None:
        super().__init__()
        self.flops = 0.0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[override]
        kwargs = kwargs or {}
        packet = getattr(func, "overloadpacket", None)
        if packet in (aten._fft_r2c, aten._fft_c2r, aten._fft_c2c):
            x, dims = args[0], list(args[1])
            lengths = [x.shape[d] for d in dims]
            if packet is aten._fft_c2r:
                lengths[-1] = int(args[3])  # last_dim_size: the real output length
            n = math.prod(lengths)
            transforms = x.numel() // math.prod(x.shape[d] for d in dims)
            per = 5.0 if packet is aten._fft_c2c else 2.5
            self.flops += transforms * per * n * math.log2(max(n, 2))
        return func(*args, **kwargs)


@dataclass
class Flops:
    """FLOPs of one side of one step: torch's count and our analytic corrections."""

    counted: int = 0
    kmeans_counted: int = 0
    kmeans_analytic: int = 0
    fft_analytic: float = 0.0

    @property
    def total(self) -> float:
        return self.counted - self.kmeans_counted + self.kmeans_analytic + self.fft_analytic


class Side:
    """Context for one side's segments: times them, optionally counts their FLOPs."""

    def __init__(self, counting: bool) -> None:
        self.counting = counting
        self.seconds = 0.0
        self.cpu_seconds = 0.0
        """CPU time of this process (all threads): what the step computed, not what it waited."""
        self.own_seconds = 0.0
        """Time in the method's own calls (plan, encode, receive, en/decode_gradient)."""
        self.flops = Flops()

    @contextlib.contextmanager
    def segment(self, own: bool = False) -> Iterator[None]:
        if not self.counting:
            t0, c0 = time.perf_counter(), time.process_time()
            yield
            elapsed = time.perf_counter() - t0
            self.cpu_seconds += time.process_time() - c0
            self.seconds += elapsed
            self.own_seconds += elapsed if own else 0.0
            return
        counter, fft = FlopCounterMode(display=False), FFTCounter()
        before = len(RECORDER.calls)
        RECORDER.counting = True
        try:
            with sdpa_kernel(SDPBackend.MATH), counter, fft:
                yield
        finally:
            RECORDER.counting = False
        self.flops.counted += counter.get_total_flops()
        self.flops.fft_analytic += fft.flops
        for call in RECORDER.calls[before:]:
            self.flops.kmeans_counted += call.counted_flops
            self.flops.kmeans_analytic += kmeans_analytic_flops(call)


# ====================================================================== one step
class Bench:
    """The split model, one batch, and one split-learning step per call."""

    def __init__(self, model: str, split_at: int, batch: int) -> None:
        torch.manual_seed(0)
        self.head, self.tail, self.spec = split_vit(model, split_at, num_classes=100)
        self.head.train()
        self.tail.train()
        self.images = torch.randn(batch, 3, 224, 224)
        self.labels = torch.randint(0, 100, (batch,))
        self.generator = torch.Generator().manual_seed(0)

    def step(self, c: Compressor, counting: bool = False) -> tuple[Side, Side]:
        """One step; returns the client and server sides (seconds, FLOPs)."""
        client, server = Side(counting), Side(counting)
        self.head.zero_grad(set_to_none=True)
        self.tail.zero_grad(set_to_none=True)
        c.zero_grad(set_to_none=True)
        with client.segment():
            out = self.head(self.images)
        with client.segment(own=True):
            plan = c.make_plan(out.tokens.detach(), out.cls_attention, self.labels, self.generator)
            enc = c.encode(out.tokens, self.labels, plan)
        up = Payload.from_bytes(enc.payload.to_bytes())
        with server.segment(own=True):
            rec = c.receive(up)
        with server.segment():
            loss = F.cross_entropy(self.tail(rec.server_input), rec.targets)
            loss.backward()
        with server.segment(own=True):
            grad = c.encode_gradient(rec.leaf.grad, up)
        down = Payload.from_bytes(grad.to_bytes())
        with client.segment(own=True):
            grad_in = c.decode_gradient(down)
        with client.segment():
            torch.autograd.backward(enc.sent, grad_in)
        return client, server

    def paper_style_head(self) -> tuple[int, int]:
        """Head forward FLOPs as fvcore sees them (fused attention uncounted): all blocks
        fused (a Base head) and with the last block explicit (ADC needs its attention)."""
        last = self.head.vit.blocks[-1].attn
        counts = []
        with torch.no_grad():
            for explicit in (False, True):
                last.fused_attn = not explicit
                counter = FlopCounterMode(display=False)
                with counter:
                    self.head.vit.forward_features(self.images)
                counts.append(counter.get_total_flops())
        last.fused_attn = False
        self.head._recorder.last = None  # type: ignore[union-attr]
        return counts[0], counts[1]


def adc_server_sweep(model: str, split_at: int, batch: int, xis: list[float]) -> None:
    """Print ADC's server FLOPs (tail forward + backward) relative to Base at several xi and
    splits of xi between batch and tokens, counted on the meta device (no compute)."""
    _, tail, spec = split_vit(model, split_at, num_classes=100)
    tail = tail.to("meta")

    def count(rows: int, tokens: int) -> int:
        x = torch.empty(rows, tokens, spec.dim, device="meta", requires_grad=True)
        target = torch.empty(rows, spec.num_classes, device="meta")
        counter = FlopCounterMode(display=False)
        with sdpa_kernel(SDPBackend.MATH), counter:
            F.cross_entropy(tail(x), target).backward()
        return counter.get_total_flops()

    base = count(batch, spec.num_tokens)
    rules = {
        "sqrt (paper text)": lambda xi: {"xi": xi},
        "authors_code (T/B=xi^0.2)": lambda xi: {"xi": xi, "split_rule": "authors_code"},
        # [REL] adc.py, used for the paper's FLOPs: T/B = xi^0.5, k/n = xi^0.25 (a bug)
        "REL code (k/n=xi^0.25)": lambda xi: {"batch_ratio": xi**0.5, "token_ratio": xi**0.25},
    }
    print(f"\nADC server FLOPs / Base (tail fwd + bwd, B={batch}), by xi and split of xi:")
    print(f"{'split':<28}" + "".join(f"{'xi=' + format(xi, 'g'):>22}" for xi in xis))
    for label, params in rules.items():
        cells = []
        for xi in xis:
            c: Any = create_compressor("adc", spec, **params(xi))
            t, k = c.sizes(batch)
            cells.append(f"{count(t, k) / base:.4f} (T={t},k={k})")
        print(f"{label:<28}" + "".join(f"{cell:>22}" for cell in cells))


# ====================================================================== main
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--xi", type=float, default=0.1)
    p.add_argument("--reps", type=int, default=3, help="timed repetitions (after the count)")
    p.add_argument("--model", default="deit_tiny_patch16_224")
    p.add_argument("--split-at", type=int, default=3)
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    p.add_argument(
        "--adc-sweep",
        type=float,
        nargs="*",
        default=[0.05, 0.1, 0.5],
        help="xi values for ADC's server FLOPs sweep (meta device, no compute)",
    )
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.methods[0] != "identity":
        args.methods = ["identity", *[m for m in args.methods if m != "identity"]]
    started = time.time()
    bench = Bench(args.model, args.split_at, args.batch_size)
    compressors: dict[str, Compressor] = {}
    for name in args.methods:
        torch.manual_seed(0)  # BottleNet++'s codec weights
        compressors[name] = create_compressor(name, bench.spec, **method_params(name, args.xi))
    b, n, d = args.batch_size, bench.spec.num_tokens, bench.spec.dim
    print(
        f"{args.model} split at {args.split_at}, B={b}, n={n}, d={d}, xi={args.xi}, "
        f"threads={torch.get_num_threads()}, reps={args.reps}, torch {torch.__version__}",
        flush=True,
    )

    # --- FLOPs (and warm-up): one counted step per method ----------------------------------
    flops: dict[str, tuple[Flops, Flops]] = {}
    kmeans_calls: list[KMeansCall] = []
    for name, c in compressors.items():
        before = len(RECORDER.calls)
        client, server = bench.step(c, counting=True)
        flops[name] = (client.flops, server.flops)
        kmeans_calls += RECORDER.calls[before:]
        print(f"counted {name}", flush=True)

    # --- time: interleaved repetitions, rotating order -------------------------------------
    times: dict[str, tuple[list[float], list[float]]] = {m: ([], []) for m in compressors}
    own: dict[str, tuple[list[float], list[float]]] = {m: ([], []) for m in compressors}
    cpu: dict[str, tuple[list[float], list[float]]] = {m: ([], []) for m in compressors}
    names = list(compressors)
    for rep in range(args.reps):
        order = names[rep % len(names) :] + names[: rep % len(names)]
        for name in order:
            client, server = bench.step(compressors[name])
            times[name][0].append(client.seconds)
            times[name][1].append(server.seconds)
            own[name][0].append(client.own_seconds)
            own[name][1].append(server.own_seconds)
            cpu[name][0].append(client.cpu_seconds)
            cpu[name][1].append(server.cpu_seconds)
        print(f"rep {rep + 1}/{args.reps} done ({time.time() - started:.0f} s)", flush=True)
    fused_head, explicit_head = bench.paper_style_head()

    report(args, compressors, flops, times, own, cpu, kmeans_calls, fused_head, explicit_head)
    if args.adc_sweep:
        adc_server_sweep(args.model, args.split_at, args.batch_size, args.adc_sweep)
    print(
        f"\n{datetime.date.today()} {platform.node()} {platform.processor() or platform.machine()}"
        f"; {time.time() - started:.0f} s in all"
    )


def report(
    args: argparse.Namespace,
    compressors: dict[str, Compressor],
    flops: dict[str, tuple[Flops, Flops]],
    times: dict[str, tuple[list[float], list[float]]],
    own: dict[str, tuple[list[float], list[float]]],
    cpu: dict[str, tuple[list[float], list[float]]],
    kmeans_calls: list[KMeansCall],
    fused_head: int,
    explicit_head: int,
) -> None:
    """Print the main table, the FLOP details and the paper-style comparison."""
    med = {m: (statistics.median(c), statistics.median(s)) for m, (c, s) in times.items()}
    base_t, base_f = med["identity"], (flops["identity"][0].total, flops["identity"][1].total)
    print(
        f"\n{'method':<13}{'params':<20}{'client ms':>10}{'cl/base':>8}{'server ms':>10}"
        f"{'sv/base':>8}{'client GFLOP':>13}{'cl FLOP':>8}{'server GFLOP':>13}{'sv FLOP':>8}"
    )
    for m, c in compressors.items():
        (ct, st), (cf, sf) = med[m], flops[m]
        print(
            f"{m:<13}{describe(m, c, args.batch_size):<20}{1000 * ct:>10.0f}"
            f"{ct / base_t[0]:>8.3f}{1000 * st:>10.0f}{st / base_t[1]:>8.3f}"
            f"{cf.total / 1e9:>13.2f}{cf.total / base_f[0]:>8.4f}"
            f"{sf.total / 1e9:>13.2f}{sf.total / base_f[1]:>8.4f}"
        )
    print(
        "\nCPU time of the process (all threads; what contention for the cores does not "
        "inflate, as waiting\nis not counted), median ms and ratio to Base; and the method's "
        "own calls (client: make_plan +\nencode + decode_gradient; server: receive + "
        "encode_gradient; backward through a decoder is\nmodel time), median wall ms and "
        "share of Base's median step:"
    )
    print(
        f"{'method':<13}{'client cpu ms':>14}{'cl/base':>8}{'server cpu ms':>14}{'sv/base':>8}"
        f"{'client own ms':>14}{'/ step':>8}{'server own ms':>14}{'/ step':>8}"
    )
    base_cpu = (statistics.median(cpu["identity"][0]), statistics.median(cpu["identity"][1]))
    for m in compressors:
        cc, sc = statistics.median(cpu[m][0]), statistics.median(cpu[m][1])
        co, so = statistics.median(own[m][0]), statistics.median(own[m][1])
        print(
            f"{m:<13}{1000 * cc:>14.0f}{cc / base_cpu[0]:>8.3f}{1000 * sc:>14.0f}"
            f"{sc / base_cpu[1]:>8.3f}{1000 * co:>14.1f}{co / base_t[0]:>8.4f}"
            f"{1000 * so:>14.1f}{so / base_t[1]:>8.4f}"
        )
    print(
        "\nGFLOP = torch FlopCounterMode (matmul/conv/attention, forward + backward, attention "
        "via the math backend)\n  - K-means as counted by torch + K-means analytic + FFT "
        "analytic. Details (MFLOP):"
    )
    print(
        f"{'method':<13}{'side':<7}{'torch count':>14}{'of it K-means':>15}"
        f"{'K-means analytic':>18}{'FFT analytic':>14}{'total - base':>14}"
    )
    for m in compressors:
        for side, f, base in (
            ("client", flops[m][0], base_f[0]),
            ("server", flops[m][1], base_f[1]),
        ):
            extra = f.kmeans_counted or f.kmeans_analytic or f.fft_analytic
            if m == "identity" or extra or m == "bottlenet":
                print(
                    f"{m:<13}{side:<7}{f.counted / 1e6:>14.1f}{f.kmeans_counted / 1e6:>15.2f}"
                    f"{f.kmeans_analytic / 1e6:>18.2f}{f.fft_analytic / 1e6:>14.1f}"
                    f"{(f.total - base) / 1e6:>14.1f}"
                )
    for call in kmeans_calls:
        upper = kmeans_analytic_flops(call, n_iter=compressors["adc"].kmeans_iters)  # type: ignore[attr-defined]
        print(
            f"K-means: {call.rows} x {call.features} into T={call.clusters}: {call.n_iter} Lloyd "
            f"iterations -> {kmeans_analytic_flops(call) / 1e6:.1f} MFLOP analytic "
            f"(max_iter bound {upper / 1e6:.1f} MFLOP = "
            f"{100 * upper / base_f[0]:.3f} % of the Base client step); torch counted "
            f"{call.counted_flops / 1e6:.1f} MFLOP of it"
        )
    print(
        f"\nPaper-style client count (forward only, fused attention uncounted, as fvcore): "
        f"head with all blocks fused {fused_head / 1e9:.2f} GFLOP, with the last block explicit "
        f"(ADC reads its CLS attention) {explicit_head / 1e9:.2f} GFLOP: "
        f"+{100 * (explicit_head / fused_head - 1):.2f} %"
    )
    print(
        "Time: client = head fwd + plan + encode + decode_gradient + head bwd; server = "
        "receive + tail fwd + loss + bwd + encode_gradient; medians over the repetitions."
    )


if __name__ == "__main__":
    main()
