"""The one run lifecycle: resume, the round loop, a checkpoint per round, the summary.

Every federated run goes through :func:`run_federated`, whatever carries its messages: the
in-process reference (function calls) and the Flower strategy (a ``Grid``) only differ in
the transport they pass, so resume and results behave the same in both.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from fedadc.config.schema import RunConfig
from fedadc.data.tensors import ImageData
from fedadc.federated.results import RunDirectory
from fedadc.federated.rounds import RoundsResult, rounds_for
from fedadc.federated.server import FederatedServer

if TYPE_CHECKING:
    from fedadc.wire.transport import Transport

log = logging.getLogger("fedadc")


def run_federated(
    run: RunConfig,
    transport: Transport,
    *,
    results: RunDirectory | None = None,
    resume: bool = False,
    data: ImageData | None = None,
) -> RoundsResult:
    """Run ``run`` over ``transport``; with ``results``, write metrics and a checkpoint
    after every round and the summary at the end, and with ``resume`` continue from the
    directory's checkpoint (its metrics are rewritten to the checkpointed rounds first)."""
    loop = rounds_for(run)(run, transport, data=data)
    start, history = 1, []
    if resume:
        if results is None:
            raise ValueError("resume needs the run directory that holds checkpoint.pt")
        done, history = results.load_checkpoint(loop.server)
        start = done + 1
        log.info("resuming after round %d from %s", done, results.path)
    finished = list(history)

    def on_round(row: dict[str, float], server: FederatedServer) -> None:
        finished.append(row)
        if results is not None:
            results.append_round(row)
            results.save_checkpoint(server, finished)

    loop.on_round = on_round
    result = loop.run(start_round=start, history=history)
    if results is not None:
        results.finish(loop.server, result.history, result.stop_reason, data=loop.data)
    return result
