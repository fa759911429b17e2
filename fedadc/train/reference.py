"""The in-process reference: the round loop of the Flower app with function-call transport.

Same messages, same bytes, same math as ``flwr run``: a test checks that both give the
same weights and byte counts for the same seed.
"""

from __future__ import annotations

import logging

from fedadc.config.schema import RunConfig
from fedadc.data.tensors import ImageData
from fedadc.federated.inprocess import InProcessTransport
from fedadc.federated.results import RunDirectory
from fedadc.federated.rounds import RoundsResult, rounds_for
from fedadc.federated.server import FederatedServer
from fedadc.federated.threads import run_threads

log = logging.getLogger("fedadc")


def train_reference(
    run: RunConfig,
    data: ImageData | None = None,
    *,
    results: RunDirectory | None = None,
    resume: bool = False,
    use_cache: bool = True,
) -> RoundsResult:
    """Run federated split learning in this process; write a run directory if given."""
    loop_cls = rounds_for(run)
    server = FederatedServer(run, data) if data is not None else None
    loop = loop_cls(run, InProcessTransport(run, use_cache=use_cache), data=data, server=server)
    start, history = 1, []
    if resume:
        if results is None:
            raise ValueError("resume needs the run directory that holds checkpoint.pt")
        done, history = results.load_checkpoint(loop.server)
        start = done + 1
        log.info("resuming after round %d from %s", done, results.path)

    def on_round(row: dict[str, float], srv: FederatedServer) -> None:
        if results is not None:
            results.append_round(row)
            results.save_checkpoint(srv, [*loop_history, row])
        loop_history.append(row)

    loop_history: list[dict[str, float]] = list(history)
    loop.on_round = on_round
    with run_threads(run):
        result = loop.run(start_round=start, history=history)
    if results is not None:
        results.finish(loop.server, result.history, result.stop_reason)
    return result
