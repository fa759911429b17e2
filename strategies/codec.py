"""fedadc messages <-> Flower RecordDicts.

A message is ONE ``ConfigRecord``: its control fields, its binary parts (serialized fedadc
Payloads, in order) as one ``list[bytes]`` value and the head, when sent, as one ``bytes``
value. Flower moves every object of a message (Message, RecordDict, each record, each Array
and each Array chunk) as its own request per hop and direction in a deployment, so this
layout costs 3 objects per message where one ``Array`` per part cost 6-7
(docs/benchmarks.md). Flower still carries exactly the bytes the ledger counted, plus its
own envelope.
"""

from __future__ import annotations

from typing import Any

from flwr.app import ConfigRecord, RecordDict

from fedadc.wire.messages import FromClient, ToClient

RECORD = "fedadc"
PARTS, HEAD = "parts", "head"
COMPUTE = "compute_s"
OUTPUTS, OUTPUT_GRADIENTS = "outputs", "output_gradients"
"""U-shape's second round trip; absent from the record when empty."""


def _record(fields: dict[str, Any], parts: list[bytes], head: bytes | None) -> RecordDict:
    values: dict[str, Any] = {**fields, PARTS: [bytes(p) for p in parts]}
    if head is not None:
        values[HEAD] = bytes(head)
    return RecordDict({RECORD: ConfigRecord(values)})


def _fields(content: RecordDict, ints: tuple[str, ...]) -> tuple[dict[str, int], ConfigRecord]:
    """The record's integer fields, checked: a malformed message fails here, with its reason."""
    record = content.config_records.get(RECORD) if isinstance(content, RecordDict) else None
    if record is None:
        raise ValueError(f"not a fedadc message: no ConfigRecord {RECORD!r}")
    missing = [k for k in (*ints, PARTS) if k not in record]
    if missing:
        raise ValueError(f"malformed fedadc message: missing {missing}")
    bad = [k for k in ints if type(record[k]) not in (int, bool)]
    parts = record[PARTS]
    if not isinstance(parts, list) or not all(isinstance(p, bytes) for p in parts):
        bad.append(PARTS)
    if HEAD in record and not isinstance(record[HEAD], bytes):
        bad.append(HEAD)
    if bad:
        raise ValueError(f"malformed fedadc message: wrong type of {bad}")
    return {k: int(record[k]) for k in ints}, record


def _optional_list(record: ConfigRecord, key: str, kind: tuple[type, ...]) -> list:
    """An optional list field of the record, type-checked like the required ones."""
    value = record.get(key, [])
    if not isinstance(value, list) or not all(type(v) in kind for v in value):
        raise ValueError(f"malformed fedadc message: wrong type of ['{key}']")
    return list(value)


def encode_to_client(msg: ToClient) -> RecordDict:
    fields: dict[str, Any] = {
        "round": msg.round,
        "first_step": msg.first_step,
        "num_steps": msg.num_steps,
        "finish": msg.finish,
    }
    if msg.outputs:
        fields[OUTPUTS] = [bytes(o) for o in msg.outputs]
    return _record(fields, msg.gradients, msg.head)


def decode_to_client(content: RecordDict) -> ToClient:
    f, record = _fields(content, ("round", "first_step", "num_steps", "finish"))
    return ToClient(
        round=f["round"],
        first_step=f["first_step"],
        num_steps=f["num_steps"],
        finish=bool(f["finish"]),
        gradients=list(record[PARTS]),
        head=record.get(HEAD),
        outputs=_optional_list(record, OUTPUTS, (bytes,)),
    )


def encode_from_client(reply: FromClient) -> RecordDict:
    fields = {
        "partition": reply.partition,
        "num_examples": reply.num_examples,
        COMPUTE: float(reply.compute_s),
    }
    if reply.output_gradients:
        fields[OUTPUT_GRADIENTS] = [bytes(g) for g in reply.output_gradients]
    return _record(fields, reply.payloads, reply.head)


def decode_from_client(content: RecordDict) -> FromClient:
    f, record = _fields(content, ("partition", "num_examples"))
    compute = record.get(COMPUTE, 0.0)
    if type(compute) not in (int, float):
        raise ValueError(f"malformed fedadc message: wrong type of ['{COMPUTE}']")
    return FromClient(
        partition=f["partition"],
        num_examples=f["num_examples"],
        payloads=list(record[PARTS]),
        head=record.get(HEAD),
        compute_s=float(compute),
        output_gradients=_optional_list(record, OUTPUT_GRADIENTS, (bytes,)),
    )
