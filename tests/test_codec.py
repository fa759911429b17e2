"""The message codec (strategies/codec.py): lossless, 3 Flower objects per message whatever
the number of parts, clear errors on records it cannot decode."""

from __future__ import annotations

import os

import pytest
from flwr.app import ArrayRecord, ConfigRecord, RecordDict
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects

from fedadc.wire.messages import FromClient, ToClient
from strategies.codec import (
    RECORD,
    decode_from_client,
    decode_to_client,
    encode_from_client,
    encode_to_client,
)

TO_CLIENT = [
    ToClient(1, 0, 1, head=os.urandom(5000)),  # round start with the head
    ToClient(3, 4, 4, gradients=[os.urandom(n) for n in (10, 0, 300, 7)]),  # S = 4
    ToClient(2, 16, 0, gradients=[os.urandom(99)], finish=True),
    ToClient(1, 0, 0),
]
FROM_CLIENT = [
    FromClient(0, payloads=[os.urandom(800)]),
    FromClient(5, payloads=[os.urandom(3), os.urandom(4)], head=b"", num_examples=512),
    FromClient(1, head=os.urandom(1000), num_examples=64),
    FromClient(2, payloads=[os.urandom(8)], compute_s=0.125),  # reported client compute
]


def _through_flower(content: RecordDict) -> RecordDict:
    """What a deployment does: every object deflated to bytes and inflated back."""
    record = content.config_records[RECORD]
    return RecordDict({RECORD: ConfigRecord.inflate(record.deflate())})


@pytest.mark.parametrize("msg", TO_CLIENT)
def test_to_client_round_trip(msg):
    content = encode_to_client(msg)
    assert decode_to_client(content) == msg
    assert decode_to_client(_through_flower(content)) == msg


@pytest.mark.parametrize("reply", FROM_CLIENT)
def test_from_client_round_trip(reply):
    content = encode_from_client(reply)
    assert decode_from_client(content) == reply
    assert decode_from_client(_through_flower(content)) == reply


@pytest.mark.parametrize("msg", TO_CLIENT)
def test_one_record_whatever_the_parts(msg):
    """RecordDict + one ConfigRecord (+ the Message): the parts add no Flower object."""
    objects = get_all_nested_objects(encode_to_client(msg))
    assert sorted(type(o).__name__ for o in objects.values()) == ["ConfigRecord", "RecordDict"]


def test_flower_carries_the_ledgers_bytes():
    """The parts travel as the very bytes the ledger counted (no re-encoding)."""
    msg = TO_CLIENT[1]
    record = encode_to_client(msg).config_records[RECORD]
    assert record["parts"] == msg.gradients
    assert sum(map(len, record["parts"])) == sum(map(len, msg.gradients))


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (RecordDict(), "not a fedadc message: no ConfigRecord 'fedadc'"),
        (
            RecordDict({"fedadc.blobs": ArrayRecord()}),
            "not a fedadc message: no ConfigRecord 'fedadc'",
        ),
        (
            RecordDict({RECORD: ConfigRecord({"partition": 1, "parts": []})}),
            r"malformed fedadc message: missing \['num_examples'\]",
        ),
        (
            RecordDict({RECORD: ConfigRecord({"partition": "1", "num_examples": 2, "parts": []})}),
            r"malformed fedadc message: wrong type of \['partition'\]",
        ),
        (
            RecordDict({RECORD: ConfigRecord({"partition": 1, "num_examples": 2, "parts": [1]})}),
            r"malformed fedadc message: wrong type of \['parts'\]",
        ),
        (
            RecordDict(
                {
                    RECORD: ConfigRecord(
                        {"partition": 1, "num_examples": 2, "parts": [], "head": 1.5}
                    )
                }
            ),
            r"malformed fedadc message: wrong type of \['head'\]",
        ),
    ],
)
def test_undecodable_records_fail_clearly(content, match):
    with pytest.raises(ValueError, match=match):
        decode_from_client(content)


def test_a_reply_is_not_a_request():
    with pytest.raises(ValueError, match="missing"):
        decode_to_client(encode_from_client(FROM_CLIENT[0]))
