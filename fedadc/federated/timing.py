"""Where a round's training time goes: client compute, server compute, transport wait.

Per exchange the server measures, on its own clock, how long the transport took from
sending the messages to having the replies (``elapsed``); each client reports how long it
computed on the message (:attr:`~fedadc.wire.messages.FromClient.compute_s`, its own
clock, so no clock has to be shared with the server). The exchange's client time is the
slowest client's compute (clients of an ``sfl`` round run in parallel in a deployment and
the exchange waits for the last one); the rest of ``elapsed`` is transport wait. With a
transport that runs clients one after another (the in-process reference, a simulation
with one worker) the other clients' compute therefore counts as wait: the server did wait
for it. Server time is validation and the tail steps. Timing is recorded, never read by
training, so it cannot change a result.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

STEP_FIELDS = ("step_s", "step_client_s", "step_server_s", "step_wait_s")
"""Per-step seconds in a metrics row and the summary: total (the whole training phase,
bookkeeping included) and its client / server / wait parts."""

TIMING_FIELDS = frozenset({*STEP_FIELDS, "wall_s"})
"""Metrics fields read off a clock: they differ between two runs of the same config, so
comparisons of runs leave exactly these out."""


@dataclass
class StepTiming:
    """Seconds of one round's training phase by component, and its steps."""

    client_s: float = 0.0
    server_s: float = 0.0
    wait_s: float = 0.0
    total_s: float = 0.0
    steps: int = 0
    """Steps of the round loop: per exchange the most payloads the server asked one
    replying client for (``sfl``: the local steps; ``sl``: clients x local steps, as they
    train in turn)."""

    def exchange(self, elapsed: float, computes: Iterable[float], steps: int) -> None:
        """Account one exchange of ``elapsed`` seconds whose replies reported ``computes``.

        A reported time is untrusted (another machine's number): a non-finite or negative
        one is ignored and the client part is capped at ``elapsed``, so client + wait is
        always exactly ``elapsed``.
        """
        valid = [c for c in computes if math.isfinite(c) and c >= 0]
        client = min(max(valid, default=0.0), elapsed)
        self.client_s += client
        self.wait_s += elapsed - client
        self.steps += steps

    @contextmanager
    def server(self) -> Iterator[None]:
        """Time a block of server compute."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.server_s += time.perf_counter() - started

    def row(self) -> dict[str, float]:
        """The metrics row's fields: seconds per step (NaN for a round without steps)."""
        per = self.steps or math.nan
        parts = (self.total_s, self.client_s, self.server_s, self.wait_s)
        return {
            "steps": self.steps,
            **{k: v / per for k, v in zip(STEP_FIELDS, parts, strict=True)},
        }


def summarize(history: Iterable[dict[str, float]]) -> dict[str, float]:
    """Per-step seconds over a whole run: every round's time over every round's steps."""
    rows = [r for r in history if r.get("steps")]
    steps = sum(int(r["steps"]) for r in rows)
    per = steps or math.nan
    return {
        "steps": steps,
        **{k: sum(r[k] * r["steps"] for r in rows) / per for k in STEP_FIELDS},
    }


def describe(row: dict[str, float]) -> str:
    """The per-round log's timing: ``s/step X (client a / server b / wait c)``."""
    return "s/step {:.4f} (client {:.4f} / server {:.4f} / wait {:.4f})".format(
        *(row.get(k, math.nan) for k in STEP_FIELDS)
    )
