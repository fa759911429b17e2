"""Flower's exchange cost, fedadc's Flower path against the in-process reference, and bytes.

Usage:  python benchmarks/flower_exchange.py [--model vit_micro|deit_tiny] [--json out.json]

In one invocation, with one private local SuperLink (its own FLWR_HOME, stopped at the end):

(a) Flower's floor: a bare echo app (benchmarks/echo_app) does request/reply exchanges with
    2 clients, payloads of fedadc's per-step size (request = one gradient payload, reply =
    one activation payload, from the ledger of the reference run at S = 1); median ms.
    Also with each client rewriting a node state (``context.state``) of the size fedadc's
    client keeps (head weights, Adam state, pending steps): Flower moves it to and from the
    Ray actor with every message.
(b) fedadc's exchange at S = 1 in a real `flwr run`: metrics.jsonl's cumulative ``wall_s``
    (the round loop: training, server tail, head averaging, checkpoint writing; evaluation
    runs only after the last round, outside ``wall_s``), per round, divided by the round's
    exchanges (ceil(local_steps / S) + 1); median over rounds 2.. (round 1 holds Flower's warm-up).
    The same figure from the in-process reference is the compute part of an exchange.
(c) steps per second (local steps per client; rounds 2..) of `flwr run` at S = 1, 4, 16
    against ``fedadc.train_reference`` with the same RunConfig (composed from the same
    flat config) writing the same run directory (checkpoint every round), in turn.
(d) bytes: the ledger's payload bytes (bytes_up + bytes_down) against what Flower would
    move for the same messages: every fedadc message of a reference run at S = 1 is encoded
    with the apps' codec (strategies/codec.py) into a Flower ``Message``; counted are the
    deflated object tree (Message, RecordDict, records, Arrays, chunks: what a deployment
    pushes and pulls, without gRPC framing) and the single protobuf ``message_to_proto``;
    also the number of Flower objects per message (each one request per hop and direction in
    a deployment), by kind of message. In simulation Flower serializes nothing (messages go
    to the Ray actors pickled).

(b) and (c) run twice for Flower: plain, and with fast-sim (strategies/fast_sim.py).
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import math
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from flwr.app import Message  # noqa: E402
from flwr.common.constant import SUPERLINK_NODE_ID  # noqa: E402
from flwr.common.serde import message_to_proto  # noqa: E402
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects  # noqa: E402
from flwr.supercore.task_identity import TaskIdentity  # noqa: E402

from fedadc.config import compose  # noqa: E402
from fedadc.federated.inprocess import InProcessTransport  # noqa: E402
from fedadc.federated.lifecycle import run_federated  # noqa: E402
from fedadc.federated.reference import train_reference  # noqa: E402
from fedadc.federated.results import RunDirectory  # noqa: E402
from fedadc.wire.messages import FromClient, ToClient  # noqa: E402
from strategies.codec import encode_from_client, encode_to_client  # noqa: E402
from strategies.launcher import LocalSimulation, run_config_text  # noqa: E402
from strategies.run_config import overrides_from_flower  # noqa: E402
from strategies.split_learning import STEP  # noqa: E402

ECHO_APP = ROOT / "benchmarks" / "echo_app"
MODELS = {
    # name: (flat config, extra Hydra overrides, local steps, rounds, S values)
    "vit_micro": ({"model": "vit_micro", "batch-size": 32}, "", 16, 4, (1, 4, 16)),
    "deit_tiny": (
        {"model": "deit_tiny", "batch-size": 128},
        "model.pretrained=false data.img_size=224",
        2,
        3,
        (1,),
    ),
}


# ====================================================================== flower runs
class Flower:
    """`flwr run` against one private local SuperLink (stopped by ``close``)."""

    def __init__(self, work: Path, workers: int) -> None:
        self.simulation = LocalSimulation(work / "flwr-home")
        self.cpus = max(1, 2 // workers)

    def run(self, app: Path, config: dict[str, Any], nodes: int) -> str:
        federation = f"num-supernodes={nodes} client-resources-num-cpus={self.cpus}"
        proc = self.simulation.run(
            app, run_config_text(config), federation, timeout=1800, capture_output=True, text=True
        )
        if proc.returncode != 0:
            raise RuntimeError(f"flwr run failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        return proc.stdout

    def close(self) -> None:
        self.simulation.stop()


def _only_run_dir(results: Path) -> Path:
    (run_dir,) = [p for p in results.iterdir() if (p / "summary.json").exists()]
    return run_dir


def _rows(run_dir: Path) -> list[dict[str, float]]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


# ====================================================================== figures
def exchanges_per_round(local_steps: int, s: int) -> int:
    return math.ceil(local_steps / s) + 1


def figures(rows: list[dict[str, float]], local_steps: int, s: int) -> dict[str, float]:
    """Per-exchange ms (median over rounds 2..) and steps/s (rounds 2..) from wall_s."""
    walls = [r["wall_s"] for r in rows]
    per_round = [b - a for a, b in itertools.pairwise(walls)]
    n = exchanges_per_round(local_steps, s)
    return {
        "round1_s": walls[0],
        "exchange_ms": 1000 * statistics.median(per_round) / n,
        "steps_per_s": local_steps * len(per_round) / (walls[-1] - walls[0]),
    }


# ====================================================================== bytes
class WireMeter:
    """Wraps the in-process transport; sizes every message as the Flower apps encode it."""

    def __init__(self, inner: InProcessTransport) -> None:
        self.inner = inner
        self.nodes: dict[int, int] = {}
        self.objects = {"up": 0, "down": 0}
        self.proto = {"up": 0, "down": 0}
        self.messages = 0
        self.state_bytes = 0  # the largest client state (head, optimizer, pending steps)
        self.object_counts: dict[str, set[int]] = {}  # kind of message -> objects per message

    def _node(self, pid: int) -> int:
        # Flower's node ids are random 64-bit integers; their varint size counts
        return self.nodes.setdefault(pid, (1 << 63) + 7919 * (pid + 1))

    def _count(self, msg: Message, direction: str, kind: str) -> None:
        objects = get_all_nested_objects(msg).values()
        self.objects[direction] += sum(len(o.deflate()) for o in objects)
        self.object_counts.setdefault(f"{direction} {kind}", set()).add(len(objects))
        self.proto[direction] += len(message_to_proto(msg).SerializeToString())
        self.messages += 1

    def exchange(self, messages: dict[int, ToClient]) -> dict[int, FromClient]:
        sent = {}
        for pid, msg in messages.items():
            out = Message(encode_to_client(msg), dst_node_id=self._node(pid), message_type=STEP)
            out.metadata.__dict__["_message_id"] = str(uuid.uuid4())  # as InMemoryGrid does
            kind = (
                "round start (head)" if msg.head is not None else "finish" if msg.finish else "step"
            )
            self._count(out, "down", kind)
            sent[pid] = out
        replies = self.inner.exchange(messages)
        for pid, reply in replies.items():
            kind = "head" if reply.head is not None else "payloads"
            self._count(Message(encode_from_client(reply), reply_to=sent[pid]), "up", kind)
            state = sum(len(v) for v in self.inner.states[pid].values())
            self.state_bytes = max(self.state_bytes, state)
        return replies


def measure_bytes(flat: dict[str, Any]) -> dict[str, float]:
    run = compose(overrides_from_flower(flat))
    TaskIdentity.task_id, TaskIdentity.run_id = 1, (1 << 63) + 12345
    TaskIdentity.node_id = SUPERLINK_NODE_ID
    meter = WireMeter(InProcessTransport(run))
    ledger = run_federated(run, meter).server.ledger
    payload = ledger.total_bytes("up") + ledger.total_bytes("down")
    objects = meter.objects["up"] + meter.objects["down"]
    proto = meter.proto["up"] + meter.proto["down"]
    return {
        "ledger_bytes": payload,
        "flower_object_bytes": objects,
        "flower_proto_bytes": proto,
        "objects_over_ledger": objects / payload,
        "proto_over_ledger": proto / payload,
        "messages": meter.messages,
        "envelope_per_message": (objects - payload) / meter.messages,
        "client_state_bytes": meter.state_bytes,
        "objects_per_message": {k: sorted(v) for k, v in sorted(meter.object_counts.items())},
    }


# ====================================================================== main
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", choices=sorted(MODELS), default="vit_micro")
    p.add_argument("--local-steps", type=int, help="per round (default: by model)")
    p.add_argument("--rounds", type=int, help=">= 2; rounds 2.. are measured")
    p.add_argument("--s", type=int, nargs="+", help="steps per message (default: by model)")
    p.add_argument("--threads", type=int, default=2, help="torch threads, both sides")
    p.add_argument("--workers", type=int, default=1, help="Flower simulation workers (1 or 2)")
    p.add_argument("--echo-exchanges", type=int, default=40)
    p.add_argument("--json", type=Path, help="also write every figure here")
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    args = p.parse_args()
    base, extra, steps, rounds, s_values = MODELS[args.model]
    steps = args.local_steps or steps
    rounds = args.rounds or rounds
    s_values = tuple(args.s or s_values)
    if rounds < 2:
        p.error("--rounds must be >= 2 (round 1 holds the warm-up and is not measured)")
    work = Path(tempfile.mkdtemp(prefix="flower-exchange-"))
    overrides = " ".join(
        x for x in (extra, f"threads={args.threads}", "federation.eval_every=1000000") if x
    )

    def flat(s: int, results: Path) -> dict[str, Any]:
        return {
            **base,
            "num-clients": 2,
            "rounds": rounds,
            "local-steps": steps,
            "steps-per-message": s,
            "seed": 0,
            "budget-epochs": 0,
            "overrides": overrides,
            "results-dir": str(results),
        }

    started = time.time()
    print(f"work directory {work}; config {flat(1, work / 'x')}", flush=True)
    # --- (d) bytes, and the per-step payload sizes for the echo app ----------------------
    print("(d) sizing every message of a reference run at S=1 ...", flush=True)
    wire = measure_bytes({**flat(1, work / "bytes"), "rounds": min(rounds, 2)})
    ref_runs: dict[int, dict[str, float]] = {}
    ref_dir = work / "ref-1"
    ref_dir.mkdir()
    run = compose(overrides_from_flower(flat(1, ref_dir)))
    train_reference(run, results=RunDirectory.create(run))
    ref_s1 = _only_run_dir(ref_dir)
    ref_runs[1] = figures(_rows(ref_s1), steps, 1)
    ledger = [line.split(",") for line in (ref_s1 / "ledger.csv").read_text().splitlines()]
    head, body = ledger[0], ledger[1:]
    col = {name: i for i, name in enumerate(head)}
    sizes = {
        d: int(
            statistics.median(
                int(r[col["total_bytes"]])
                for r in body
                if r[col["direction"]] == d and r[col["weights"]] == "0"
            )
        )
        for d in ("up", "down")
    }
    print(f"per-step payload: request (down) {sizes['down']} B, reply (up) {sizes['up']} B")

    flower = Flower(work, args.workers)
    results: dict[str, Any] = {"echo": {}, "flower": {}, "reference": ref_runs, "bytes": wire}
    try:
        # --- (a) Flower's floor, and with a node state of fedadc's size ------------------------
        for fast, state in itertools.product((False, True), (0, wire["client_state_bytes"])):
            out = work / f"echo-{fast}-{state}.json"
            flower.run(
                ECHO_APP,
                {
                    "num-clients": 2,
                    "exchanges": args.echo_exchanges,
                    "warmup": 3,
                    "down-bytes": sizes["down"],
                    "up-bytes": sizes["up"],
                    "state-bytes": state,
                    "out": str(out),
                    "fast-sim": fast,
                    "fedadc-root": str(ROOT),
                },
                nodes=2,
            )
            echo = json.loads(out.read_text())
            measured = echo["seconds"][echo["warmup"] :]
            results["echo"][(fast, state)] = {
                "median_ms": 1000 * statistics.median(measured),
                "first_ms": 1000 * echo["seconds"][0],
                "n": len(measured),
            }
            print(f"(a) echo fast-sim={fast} state={state}: {results['echo'][(fast, state)]}")
        # --- (b), (c): S in turn: reference, Flower, Flower with fast-sim ----------------------
        for s in s_values:
            if s not in ref_runs:
                out_dir = work / f"ref-{s}"
                out_dir.mkdir()
                run = compose(overrides_from_flower(flat(s, out_dir)))
                train_reference(run, results=RunDirectory.create(run))
                ref_runs[s] = figures(_rows(_only_run_dir(out_dir)), steps, s)
            print(f"(c) reference S={s}: {ref_runs[s]}", flush=True)
            for fast in (False, True):
                out_dir = work / f"flower-{s}-{fast}"
                out_dir.mkdir()
                flower.run(ROOT, {**flat(s, out_dir), "fast-sim": fast}, nodes=2)
                got = figures(_rows(_only_run_dir(out_dir)), steps, s)
                results["flower"][(s, fast)] = got
                print(f"(c) flower S={s} fast-sim={fast}: {got}", flush=True)
    finally:
        flower.close()
    elapsed = time.time() - started
    report(args, results, sizes, s_values, steps, rounds, elapsed)
    if args.json:
        results["flower"] = {f"S={s} fast={f}": v for (s, f), v in results["flower"].items()}
        results["echo"] = {f"fast={f} state={b}": v for (f, b), v in results["echo"].items()}
        results["meta"] = {
            "command": " ".join(sys.argv),
            "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "machine": f"{platform.node()} {platform.processor()} {os.cpu_count()} cpus",
            "torch": torch.__version__,
            "elapsed_s": elapsed,
            "sizes": sizes,
        }
        args.json.write_text(json.dumps(results, indent=2, default=str))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


def report(
    args: argparse.Namespace,
    results: dict[str, Any],
    sizes: dict[str, int],
    s_values: tuple[int, ...],
    steps: int,
    rounds: int,
    elapsed: float,
) -> None:
    echo, flw, ref, wire = (results[k] for k in ("echo", "flower", "reference", "bytes"))
    print()
    print(
        f"model {args.model}, 2 clients, {rounds} rounds x {steps} local steps, "
        f"threads {args.threads}, {args.workers} simulation worker(s); {elapsed:.0f} s in all"
    )
    print(f"\n(a) Flower's floor: echo, 2 clients, {sizes['down']} B down / {sizes['up']} B up")
    for (fast, st), e in echo.items():
        what = f"+ {st:,d} B context.state per message" if st else "bare"
        print(
            f"    fast-sim={fast!s:5} {what:41}: median {e['median_ms']:7.1f} ms per exchange "
            f"(n={e['n']}; first {e['first_ms']:.0f} ms)"
        )
    print("\n(b) fedadc exchange at S=1 (median over rounds 2.., ms per exchange)")
    print("    variant            | ms/exch | / bare echo | - reference | - ref - echo with state")
    r1 = ref[1]["exchange_ms"]
    print(f"    in-process ref     | {r1:7.1f} |             |             |")
    for fast in (False, True):
        got = flw[(1, fast)]["exchange_ms"]
        floor = echo[(fast, 0)]["median_ms"]
        with_state = echo[(fast, wire["client_state_bytes"])]["median_ms"]
        # without fast-sim, compute and the 0.1 s poll ticks overlap: no residual to subtract
        rest = f"{got - r1 - with_state:11.1f}" if fast else "        n/a"
        print(
            f"    flower fast={fast!s:5} | {got:7.1f} | {got / floor:10.2f}x | {got - r1:11.1f} "
            f"| {rest}"
        )
    print("\n(c) steps per second (rounds 2..), Flower / reference")
    print("    S  | reference | flower | ratio | flower fast-sim | ratio")
    for s in s_values:
        a, b, c = ref[s]["steps_per_s"], flw[(s, False)]["steps_per_s"], flw[(s, True)]
        print(
            f"    {s:2d} | {a:9.2f} | {b:6.2f} | {b / a:5.2f} | {c['steps_per_s']:15.2f} "
            f"| {c['steps_per_s'] / a:5.2f}"
        )
    print("\n(d) bytes (reference run at S=1, every message encoded as the apps do)")
    print(f"    ledger payload bytes (up + down)     {wire['ledger_bytes']:>12,d}")
    print(
        f"    Flower deflated object trees         {wire['flower_object_bytes']:>12,d}  "
        f"ratio {wire['objects_over_ledger']:.4f}"
    )
    print(
        f"    Flower message_to_proto               {wire['flower_proto_bytes']:>12,d}  "
        f"ratio {wire['proto_over_ledger']:.4f}"
    )
    print(
        f"    {wire['messages']} messages; Flower envelope "
        f"{wire['envelope_per_message']:.0f} B per message (object trees)"
    )
    print("    Flower objects per message (one request each per hop and direction, deployed):")
    for kind, counts in wire["objects_per_message"].items():
        print(f"      {kind:24} {', '.join(map(str, counts))}")


if __name__ == "__main__":
    main()
