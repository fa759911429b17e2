"""Echo apps whose replies say which process served them and what ``context.state`` held.

The server sends one message to each of ``num-clients`` nodes per exchange and waits for all
replies, with ``grid.send_and_receive`` (``poll-s`` = 0, stock) or fedadc's
``strategies.grid_exchange.push_pull`` (``poll-s`` > 0; ``fast-pull`` also shortens the
object-pull retry). It writes every exchange's seconds and replies to the JSON file ``out``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

server = ServerApp()
client = ClientApp()


def _blob(size: int) -> ArrayRecord:
    data = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8)
    return ArrayRecord(array_dict={"0": Array(data)})


@client.train("step")
def step(msg: Message, context: Context) -> Message:
    ctl = msg.content.config_records["ctl"]
    if ctl["import-torch"]:
        import torch  # noqa: F401  (the cost a fresh process pays per message)
    count = int(context.state["warm"]["count"]) + 1 if "warm" in context.state else 1
    context.state["warm"] = ConfigRecord({"count": count})
    info = {"pid": os.getpid(), "count": count, "i": int(ctl["i"])}
    content = RecordDict({"blob": _blob(int(ctl["payload-bytes"])), "info": ConfigRecord(info)})
    return Message(content, reply_to=msg)


@server.main()
def main(grid: Grid, context: Context) -> None:
    cfg = context.run_config
    poll_s = float(cfg["poll-s"])
    if poll_s > 0 or cfg["fast-pull"]:
        sys.path.insert(0, str(cfg["fedadc-root"]))
    if cfg["fast-pull"]:
        from strategies.flower_private import install_fast_pull

        install_fast_pull()
    want, timeout_s = int(cfg["num-clients"]), float(cfg["timeout-s"])
    deadline = time.monotonic() + 120
    while len(nodes := sorted(grid.get_node_ids())) < want:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(nodes)} of {want} nodes connected")
        time.sleep(0.1)
    seconds, served = [], []
    for i in range(int(cfg["exchanges"])):
        ctl = {"i": i, "payload-bytes": int(cfg["payload-bytes"])}
        ctl["import-torch"] = bool(cfg["import-torch"])
        out = [
            Message(
                RecordDict({"blob": _blob(int(cfg["payload-bytes"])), "ctl": ConfigRecord(ctl)}),
                dst_node_id=node,
                message_type="train.step",
            )
            for node in nodes[:want]
        ]
        t0 = time.perf_counter()
        if poll_s > 0:
            from strategies.grid_exchange import push_pull

            replies = push_pull(grid, out, timeout_s=timeout_s, poll_s=poll_s)
        else:
            replies = list(grid.send_and_receive(out, timeout=timeout_s))
        seconds.append(time.perf_counter() - t0)
        served.append(
            [
                {"node": r.metadata.src_node_id, "error": r.error.reason}
                if r.has_error()
                else {"node": r.metadata.src_node_id, **dict(r.content["info"])}
                for r in replies
            ]
        )
    Path(str(cfg["out"])).write_text(json.dumps({"seconds": seconds, "served": served}))
