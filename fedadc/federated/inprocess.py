"""The in-process transport: clients are objects, messages are function calls."""

from __future__ import annotations

from fedadc.config.schema import RunConfig
from fedadc.federated.client import FederatedClient
from fedadc.wire.messages import FromClient, ToClient


class InProcessTransport:
    """Every client keeps its state in a dict, exactly as Flower's ``context.state``."""

    def __init__(self, run: RunConfig, *, use_cache: bool = True) -> None:
        self.run = run
        self.use_cache = use_cache
        self.states: dict[int, dict[str, bytes]] = {}

    def exchange(self, messages: dict[int, ToClient]) -> dict[int, FromClient]:
        replies = {}
        for pid in sorted(messages):
            state = self.states.setdefault(pid, {})
            client = FederatedClient.for_run(self.run, pid, state, use_cache=self.use_cache)
            replies[pid] = client.handle(messages[pid])
        return replies
