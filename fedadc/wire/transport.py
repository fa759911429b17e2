"""The one thing a transport does: deliver a round's messages and collect the replies."""

from __future__ import annotations

from typing import Protocol

from fedadc.wire.messages import FromClient, ToClient


class Transport(Protocol):
    """Delivers one message per client and returns the replies that came back.

    A client missing from the result failed (crashed, timed out, replied with an error);
    the round loop drops it from the rest of the round. Implementations: a function call
    in-process (``fedadc.federated.inprocess``), Flower messages (``strategies``).
    """

    def exchange(self, messages: dict[int, ToClient]) -> dict[int, FromClient]: ...
