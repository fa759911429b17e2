"""``context.state`` as a mapping of bytes, the form fedadc's client keeps its state in."""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping

import numpy as np
from flwr.app import Array, ArrayRecord, Context

KEY = "fedadc.state"


class ContextState(MutableMapping[str, bytes]):
    """Reads and writes one ``ArrayRecord`` of ``context.state``; each value one uint8
    array. Flower persists it per node across the messages of a run, in any process."""

    def __init__(self, context: Context) -> None:
        if KEY not in context.state.array_records:
            context.state[KEY] = ArrayRecord()
        self.record: ArrayRecord = context.state.array_records[KEY]

    def __getitem__(self, key: str) -> bytes:
        return self.record[key].numpy().tobytes()

    def __setitem__(self, key: str, value: bytes) -> None:
        self.record[key] = Array(np.frombuffer(value, dtype=np.uint8))

    def __delitem__(self, key: str) -> None:
        del self.record[key]

    def __iter__(self) -> Iterator[str]:
        return iter(list(self.record.keys()))

    def __len__(self) -> int:
        return len(self.record)
