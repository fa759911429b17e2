"""The in-process reference: the Flower app's run with function calls as the transport.

Same messages, same bytes, same math as ``flwr run``: a test checks that both give the
same weights and byte counts for the same seed.
"""

from __future__ import annotations

from fedadc.config.schema import RunConfig
from fedadc.data.tensors import ImageData
from fedadc.federated.inprocess import InProcessTransport
from fedadc.federated.lifecycle import run_federated
from fedadc.federated.results import RunDirectory
from fedadc.federated.rounds import RoundsResult


def train_reference(
    run: RunConfig,
    data: ImageData | None = None,
    *,
    results: RunDirectory | None = None,
    resume: bool = False,
    use_cache: bool = True,
) -> RoundsResult:
    """Run federated split learning in this process; write a run directory if given."""
    transport = InProcessTransport(run, use_cache=use_cache)
    return run_federated(run, transport, results=results, resume=resume, data=data)
