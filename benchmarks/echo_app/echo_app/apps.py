"""Bare echo apps: the server sends ``down-bytes`` to each client, each replies ``up-bytes``.

With ``state-bytes`` > 0 each client also rewrites a node state (``context.state``) of that
size per message, as fedadc's client does with its head, optimizer state and pending steps.
One exchange = one ``grid.send_and_receive`` of a message to every client and all replies,
the shape of fedadc's per-step exchange (same message type, one uint8 array each way).
The server writes the wall time of every exchange to the JSON file ``out``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

server = ServerApp()
client = ClientApp()
_PAYLOADS: dict[int, np.ndarray] = {}


def _payload(size: int) -> np.ndarray:
    """Random bytes (made once per size), so nothing can shortcut zeros."""
    if size not in _PAYLOADS:
        _PAYLOADS[size] = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8)
    return _PAYLOADS[size]


def _content(size: int, ctl: dict[str, int] | None = None) -> RecordDict:
    content = RecordDict({"blob": ArrayRecord(array_dict={"000000": Array(_payload(size))})})
    if ctl is not None:
        content["ctl"] = ConfigRecord(ctl)
    return content


@client.train("step")
def echo(msg: Message, context: Context) -> Message:
    ctl = msg.content.config_records["ctl"]
    if int(ctl["state-bytes"]):  # rewrite a node state of that size, as fedadc's client does
        blob = _payload(int(ctl["state-bytes"])).copy()
        context.state["blob"] = ArrayRecord(array_dict={"000000": Array(blob)})
    return Message(_content(int(ctl["up-bytes"])), reply_to=msg)


@server.main()
def main(grid: Grid, context: Context) -> None:
    cfg = context.run_config
    if cfg["fast-sim"]:
        sys.path.insert(0, str(cfg["fedadc-root"]))
        from strategies.fast_sim import enable_fast_simulation

        enable_fast_simulation(grid=grid)
    want = int(cfg["num-clients"])
    deadline = time.monotonic() + 120
    while len(nodes := sorted(grid.get_node_ids())) < want:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(nodes)} of {want} nodes connected")
        time.sleep(0.1)
    times = []
    for _ in range(int(cfg["warmup"]) + int(cfg["exchanges"])):
        out = [
            Message(
                _content(
                    int(cfg["down-bytes"]),
                    {"up-bytes": int(cfg["up-bytes"]), "state-bytes": int(cfg["state-bytes"])},
                ),
                dst_node_id=node,
                message_type="train.step",
            )
            for node in nodes[:want]
        ]
        t0 = time.perf_counter()
        replies = list(grid.send_and_receive(out, timeout=120))
        times.append(time.perf_counter() - t0)
        if len(replies) != want or any(r.has_error() for r in replies):
            raise RuntimeError(f"echo failed: {len(replies)} replies of {want}")
        if any(
            r.content.array_records["blob"]["000000"].numpy().nbytes != int(cfg["up-bytes"])
            for r in replies
        ):
            raise RuntimeError("echo reply of the wrong size")
    Path(str(cfg["out"])).write_text(
        json.dumps({"warmup": int(cfg["warmup"]), "seconds": times, "nodes": want})
    )
