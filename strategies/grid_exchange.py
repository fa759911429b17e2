"""One request/reply exchange through the public Grid API, polling every ``poll_s``.

``Grid.send_and_receive`` of a deployment (``HttpGrid``, flwr 1.41.0) sleeps a hard-coded
3 s between pulls of the replies, so an exchange whose replies are ready after 0.2 s still
takes 3 s. `push_pull` does the same with ``push_messages`` + ``pull_messages`` and a poll
interval of the caller's choice (a run-config key). The SuperLink spends 3-5 ms of CPU per
request, so polls of 20-50 ms are cheaper overall than 5 ms ones on a small machine.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

DEFAULT_POLL_S = 0.02
"""Tuned by ``benchmarks/deployment_latency.py --poll-s``: 20 ms beat 50 and 100 ms in median
and p90 in two sweeps on 2 loaded cores, at no more CPU per exchange (docs/warm-runtime.md)."""


def push_pull(
    grid: Any,
    messages: Iterable[Any],
    *,
    timeout_s: float | None,
    poll_s: float = DEFAULT_POLL_S,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> list[Any]:
    """Push ``messages``, then pull their replies every ``poll_s`` until all are in.

    As ``send_and_receive``: returns the replies that arrived within ``timeout_s`` (all of
    them with ``None``: wait for ever), in arrival order, error replies included (the caller
    decides what to do with them); messages the grid could not push (``None`` ids) get no
    reply. Unlike ``send_and_receive`` the replies are pulled at least once, also when
    ``timeout_s`` is 0, and once more at the deadline.
    """
    if poll_s <= 0:
        raise ValueError(f"poll_s must be > 0, got {poll_s}")
    pending = {mid for mid in grid.push_messages(messages) if mid}
    deadline = None if timeout_s is None else clock() + timeout_s
    replies: list[Any] = []
    while pending:
        arrived = list(grid.pull_messages(pending))
        replies.extend(arrived)
        pending.difference_update(r.metadata.reply_to_message_id for r in arrived)
        if not pending:
            break
        wait = poll_s
        if deadline is not None:
            left = deadline - clock()
            if left <= 0:
                break
            wait = min(poll_s, left)
        sleep(wait)
    return replies
