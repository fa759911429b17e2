"""fedadc ClientApp: decode the message, let fedadc's client handle it, encode the reply."""

from __future__ import annotations

import dataclasses
import os

import torch
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

from client_app.state import ContextState
from client_app.warm.common import WARM_WORKER_ENV
from fedadc.config.schema import RunConfig
from fedadc.data.sources import PATH_SOURCES
from fedadc.federated.build import client_data
from fedadc.federated.client import FederatedClient, Persist
from fedadc.federated.threads import run_threads
from strategies.codec import decode_to_client, encode_from_client
from strategies.run_config import run_config

app = ClientApp()


def _node_run(context: Context) -> RunConfig:
    """The run's config as this node sees it: a node config ``data-path=DIR`` says where
    this device stores the run's dataset (it replaces ``data.path``; the partition still
    selects the node's share, so every device must hold the same dataset)."""
    run = run_config(context)
    path = context.node_config.get("data-path")
    if path is None or path == "":
        return run
    if run.data.source not in PATH_SOURCES:
        raise ValueError(
            f"node config data-path={path!r} needs a run with data.source in {PATH_SOURCES} "
            f"(this run has data.source={run.data.source}); drop data-path or change the data"
        )
    return dataclasses.replace(run, data=dataclasses.replace(run.data, path=str(path)))


def _persist() -> Persist:
    """Keep a round in memory only in the warm worker, the one process that serves every
    message of this node; a process per message (stock) or Ray's pooled actors (simulation:
    any actor may serve any node) need the whole state in ``context.state`` every message."""
    return "round_end" if os.environ.get(WARM_WORKER_ENV) == "1" else "every_message"


def _partition(context: Context, num_clients: int) -> int:
    cfg = context.node_config
    if "partition-id" not in cfg:
        raise ValueError(
            "this SuperNode has no 'partition-id' in its node config; start it with "
            "--node-config 'partition-id=K num-partitions=N'"
        )
    total = int(cfg.get("num-partitions", num_clients))
    if total != num_clients:
        raise ValueError(
            f"node config says num-partitions={total} but the run has "
            f"federation.num_clients={num_clients}; make them equal (num-supernodes in "
            "simulation, --node-config in deployment)"
        )
    return int(cfg["partition-id"])


@app.query("info")
def info(msg: Message, context: Context) -> Message:
    run = _node_run(context)
    pid = _partition(context, run.federation.num_clients)
    data = client_data(run, pid)
    values: dict = {"partition-id": pid, "num-examples": len(data)}
    if run.federation.shape != "u":  # U-shape: no label information leaves the client
        values["label-histogram"] = str(torch.bincount(data.labels).tolist())
    record = ConfigRecord(values)
    return Message(RecordDict({"info": record}), reply_to=msg)


@app.train("step")
def step(msg: Message, context: Context) -> Message:
    run = _node_run(context)
    pid = _partition(context, run.federation.num_clients)
    with run_threads(run):
        client = FederatedClient.for_run(run, pid, ContextState(context), persist=_persist())
        reply = client.handle(decode_to_client(msg.content))
    return Message(encode_from_client(reply), reply_to=msg)
