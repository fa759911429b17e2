"""A ClientApp that misbehaves on purpose, for tests only (never in the product's pyproject).

It wraps the real handlers of ``client_app.app`` and injects the faults listed in
``fault_plan.json`` next to this file, each for one partition at one step message
(``round``, ``first_step``) of the run:

* ``crash``: raise (Flower returns an error reply to the server);
* ``sleep``: sleep ``sleep_s`` seconds before handling (past ``federation.timeout_s``);
* ``nan``: handle the message, then poison the first payload of the reply with NaN.

``tests/test_flower_faults.py`` copies the app into a temporary project as the package
``fault_injection`` (a name nothing else uses, so the copy, not a ``tests`` package on the
path, is imported), writes the plan and points that project's ``clientapp`` here. The
product code has no fault hooks.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from client_app import app as real
from strategies.codec import decode_from_client, decode_to_client, encode_from_client

PLAN = Path(__file__).with_name("fault_plan.json")

app = ClientApp()


def _fault(msg: Message, context: Context) -> dict:
    """The fault planned for this node and message, or {}."""
    plan = json.loads(PLAN.read_text()) if PLAN.is_file() else []
    partition = int(context.node_config.get("partition-id", -1))
    request = decode_to_client(msg.content)
    for fault in plan:
        if (fault["partition"], fault["round"], fault["first_step"]) == (
            partition,
            request.round,
            request.first_step,
        ):
            return fault
    return {}


@app.query("info")
def info(msg: Message, context: Context) -> Message:
    return real.info(msg, context)


@app.train("step")
def step(msg: Message, context: Context) -> Message:
    fault = _fault(msg, context)
    kind = fault.get("kind")
    if kind == "crash":
        raise RuntimeError(f"injected fault: partition {fault['partition']} crashes")
    if kind == "sleep":
        time.sleep(float(fault["sleep_s"]))
    reply = real.step(msg, context)
    if kind == "nan":
        from fedadc.wire import Payload

        content = decode_from_client(reply.content)
        payload = Payload.from_bytes(content.payloads[0])
        payload.tensors["activations"] = torch.full_like(payload["activations"], float("nan"))
        content.payloads[0] = payload.to_bytes()
        reply = Message(encode_from_client(content), reply_to=msg)
    return reply
