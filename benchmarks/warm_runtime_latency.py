"""Seconds per exchange on real SuperNodes: stock Flower vs the warm runtime, side by side.

One exchange = one message to each of 2 SuperNodes and both replies, as the ServerApp sees
it (tests/warm_app, S = 1 shape: one small array each way). Each runtime gets its own
loopback deployment (a SuperLink and 2 SuperNodes started by `fedadc-supernode`, private
FLWR_HOMEs and free ports: strategies/local_deployment.py), one after the other:

* stock: ``fedadc-supernode --stock`` (plain ``flower-supernode``: one ``flwr-clientapp``
  process per message) and the ServerApp's ``grid.send_and_receive``;
* warm: ``fedadc-supernode`` (patched SuperNode waits + long-lived worker) and the ServerApp's
  ``strategies.grid_exchange.push_pull`` every ``--poll-s`` with the fast object-pull retry.

The ClientApp imports torch per message when ``--import-torch`` (what a fresh process of a
torch app pays). The first ``--warmup`` exchanges (FAB install, first imports, the SuperNode's
idle 3 s poll) are left out of the figures.

    python benchmarks/warm_runtime_latency.py                      # insecure
    python benchmarks/warm_runtime_latency.py --tls-auth            # TLS + SuperNode auth
    python benchmarks/warm_runtime_latency.py --stock-exchanges 0   # warm only
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"

from strategies.local_deployment import CONNECTION, DEPLOY, LocalDeployment  # noqa: E402

APP = ROOT / "tests" / "warm_app"


def p90(values: list[float]) -> float:
    if len(values) < 2:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[89]


def measure(root: Path, *, warm: bool, exchanges: int, args: argparse.Namespace) -> list[float]:
    """Seconds of every exchange of one run on a fresh deployment (warm-up included)."""
    certs = keys = None
    if args.tls_auth:
        certs, keys = root / "certs", root / "keys"
        for cmd in (
            [DEPLOY / "make_certificates.sh", "127.0.0.1", certs],
            [DEPLOY / "make_node_keys.sh", "2", keys],
        ):
            subprocess.run(cmd, check=True, capture_output=True)
    deployment = LocalDeployment(root, certs=certs, node_auth=args.tls_auth)
    try:
        deployment.start_superlink()
        for k in range(2):
            key = None
            if keys is not None:
                deployment.register(keys / f"node_{k}.pub")
                key = keys / f"node_{k}"
            extra = (f"--poll-s={args.poll_s}",) if warm else ()
            deployment.start_supernode(k, 2, key=key, name=f"node-{k}", stock=not warm, extra=extra)
        deployment.wait_online(2, timeout=300)
        out = root / "out.json"
        config = (
            f"exchanges={exchanges} payload-bytes={args.payload_bytes} "
            f"import-torch={str(args.import_torch).lower()} "
            f"poll-s={args.poll_s if warm else 0.0} fast-pull={str(warm).lower()} "
            f'fedadc-root="{ROOT}" out="{out}"'
        )
        answer = deployment.flwr(
            "run", str(APP), CONNECTION, "--stream", "--run-config", config, timeout=7200
        )
        if answer.returncode != 0 or not out.exists():
            raise RuntimeError(answer.stdout[-3000:] + answer.stderr[-3000:])
        result = json.loads(out.read_text())
        errors = [r for replies in result["served"] for r in replies if "error" in r]
        if errors or any(len(replies) != 2 for replies in result["served"]):
            raise RuntimeError(f"missing or error replies: {errors}")
        if warm:
            pids = {r["node"]: set() for replies in result["served"] for r in replies}
            for replies in result["served"]:
                for r in replies:
                    pids[r["node"]].add(r["pid"])
            print(f"  warm: ClientApp PIDs per node: {[len(p) for p in pids.values()]}")
        return [float(s) for s in result["seconds"]]
    finally:
        deployment.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stock-exchanges", type=int, default=6, help="incl. warm-up")
    parser.add_argument("--warm-exchanges", type=int, default=40, help="incl. warm-up")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--poll-s", type=float, default=0.05, help="warm: all polls")
    parser.add_argument("--payload-bytes", type=int, default=1024)
    parser.add_argument("--import-torch", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--tls-auth", action="store_true", help="TLS + SuperNode auth")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="fedadc-warm-bench-") as tmp:
        for name, warm, count in (
            ("stock", False, args.stock_exchanges),
            ("warm", True, args.warm_exchanges),
        ):
            if count <= args.warmup:
                continue
            t0 = time.perf_counter()
            seconds = measure(Path(tmp) / name, warm=warm, exchanges=count, args=args)
            kept = seconds[args.warmup :]
            rows.append((name, statistics.median(kept), p90(kept), len(kept)))
            print(f"  {name}: {[round(s, 2) for s in seconds]} ({time.perf_counter() - t0:.0f} s)")
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    security = "TLS + SuperNode auth" if args.tls_auth else "insecure"
    print(
        f"\n{now}, {platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}; "
        f"2 SuperNodes on loopback, {security}, {args.payload_bytes} B each way, "
        f"import torch per message: {args.import_torch}, warm polls {args.poll_s} s\n"
    )
    print("| runtime | median s / exchange | p90 s | n |")
    print("|---|---|---|---|")
    for name, median, ninety, n in rows:
        print(f"| {name} | {median:.3f} | {ninety:.3f} | {n} |")


if __name__ == "__main__":
    main()
