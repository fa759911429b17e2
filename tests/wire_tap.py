"""A transport that keeps every byte string it carries, and the check that a ledger's
per-kind counts are exactly the sizes of the tensors serialized in those bytes."""

from __future__ import annotations

import json
import struct
from collections import defaultdict

import safetensors.numpy

from fedadc.federated import InProcessTransport
from fedadc.wire import FromClient, Ledger, ToClient


class WireTap(InProcessTransport):
    """In-process transport that records each message's serialized payloads by direction."""

    def __init__(self, run) -> None:
        super().__init__(run)
        self.sent: dict[str, list[bytes]] = {"up": [], "down": []}

    def exchange(self, messages: dict[int, ToClient]) -> dict[int, FromClient]:
        for msg in messages.values():
            self.sent["down"] += [*msg.gradients, *msg.outputs, *([msg.head] if msg.head else [])]
        replies = super().exchange(messages)
        for reply in replies.values():
            head = [reply.head] if reply.head else []
            self.sent["up"] += [*reply.payloads, *reply.output_gradients, *head]
        return replies

    def label_dtypes(self, direction: str) -> set[str]:
        """Wire dtypes of the ``labels`` tensors sent in ``direction``."""
        arrays = (safetensors.numpy.load(data) for data in self.sent[direction])
        return {str(a["labels"].dtype) for a in arrays if "labels" in a}


def serialized_sizes(messages: list[bytes]) -> dict[str, int]:
    """Bytes per kind of the tensors as serialized (``header``: everything else), kinds
    read from the header's tags (an int8 tensor's scale is its own entry there)."""
    sizes: dict[str, int] = defaultdict(int)
    for data in messages:
        kinds = _kind_tags(data)
        arrays = safetensors.numpy.load(data)
        for name, array in arrays.items():
            sizes[kinds[name]] += array.nbytes
        sizes["header"] += len(data) - sum(a.nbytes for a in arrays.values())
    return dict(sizes)


def _kind_tags(data: bytes) -> dict[str, str]:
    """Tensor name -> kind, as written in the safetensors header's fedadc metadata."""
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + length])
    return json.loads(header["__metadata__"]["fedadc"])["kinds"]


def assert_ledger_matches_the_wire(ledger: Ledger, sent: dict[str, list[bytes]]) -> None:
    by_kind = ledger.bytes_by_kind()
    for direction in ("up", "down"):
        assert by_kind[direction] == serialized_sizes(sent[direction]), direction
        assert ledger.total_bytes(direction) == sum(len(d) for d in sent[direction])
