"""The in-process transport: clients are objects, messages are function calls."""

from __future__ import annotations

import logging

from fedadc.config.schema import RunConfig
from fedadc.federated.client import FederatedClient, Persist, RoundStateLost
from fedadc.wire.messages import FromClient, ToClient

log = logging.getLogger("fedadc")


class InProcessTransport:
    """Every client keeps its state in a dict, exactly as Flower's ``context.state``."""

    def __init__(
        self, run: RunConfig, *, use_cache: bool = True, persist: Persist = "every_message"
    ) -> None:
        self.run = run
        self.use_cache = use_cache
        self.persist = persist
        self.states: dict[int, dict[str, bytes]] = {}

    def exchange(self, messages: dict[int, ToClient]) -> dict[int, FromClient]:
        replies = {}
        for pid in sorted(messages):
            state = self.states.setdefault(pid, {})
            client = FederatedClient.for_run(
                self.run, pid, state, use_cache=self.use_cache, persist=self.persist
            )
            try:
                replies[pid] = client.handle(messages[pid])
            except RoundStateLost as err:  # as Flower's error reply: no reply, client dropped
                log.warning("%s", err)
        return replies
