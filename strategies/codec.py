"""fedadc messages <-> Flower RecordDicts.

Binary parts travel as one uint8 ``Array`` each, so Flower carries exactly the bytes the
ledger counted (plus Flower's own envelope, measured by the benchmarks).
"""

from __future__ import annotations

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

from fedadc.wire.messages import FromClient, ToClient

CTL, HEAD, BLOBS = "fedadc.ctl", "fedadc.head", "fedadc.blobs"


def _array(data: bytes) -> Array:
    return Array(np.frombuffer(data, dtype=np.uint8))


def _bytes(array: Array) -> bytes:
    return array.numpy().tobytes()


def _blobs(items: list[bytes]) -> ArrayRecord:
    return ArrayRecord(array_dict={f"{i:06d}": _array(b) for i, b in enumerate(items)})


def _unblobs(record: ArrayRecord | None) -> list[bytes]:
    if record is None:
        return []
    return [_bytes(record[k]) for k in sorted(record.keys())]


def encode_to_client(msg: ToClient) -> RecordDict:
    content = RecordDict()
    content[CTL] = ConfigRecord(
        {
            "round": msg.round,
            "first_step": msg.first_step,
            "num_steps": msg.num_steps,
            "finish": msg.finish,
        }
    )
    content[BLOBS] = _blobs(msg.gradients)
    if msg.head is not None:
        content[HEAD] = ArrayRecord(array_dict={"head": _array(msg.head)})
    return content


def decode_to_client(content: RecordDict) -> ToClient:
    ctl = content.config_records[CTL]
    head = content.array_records.get(HEAD)
    return ToClient(
        round=int(ctl["round"]),
        first_step=int(ctl["first_step"]),
        num_steps=int(ctl["num_steps"]),
        finish=bool(ctl["finish"]),
        gradients=_unblobs(content.array_records.get(BLOBS)),
        head=_bytes(head["head"]) if head is not None else None,
    )


def encode_from_client(reply: FromClient) -> RecordDict:
    content = RecordDict()
    content[CTL] = ConfigRecord({"partition": reply.partition, "num_examples": reply.num_examples})
    content[BLOBS] = _blobs(reply.payloads)
    if reply.head is not None:
        content[HEAD] = ArrayRecord(array_dict={"head": _array(reply.head)})
    return content


def decode_from_client(content: RecordDict) -> FromClient:
    ctl = content.config_records[CTL]
    head = content.array_records.get(HEAD)
    return FromClient(
        partition=int(ctl["partition"]),
        num_examples=int(ctl["num_examples"]),
        payloads=_unblobs(content.array_records.get(BLOBS)),
        head=_bytes(head["head"]) if head is not None else None,
    )
