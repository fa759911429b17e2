"""Running a real `flwr run` of this project from tests: private home, ports and results.

Each test module (or test) gets its own :class:`strategies.launcher.LocalSimulation`: a
private FLWR_HOME and free ports, its SuperLink stopped at the end (`stop_superlink`).
"""

from __future__ import annotations

from pathlib import Path

import torch

from fedadc.federated.build import load_data
from fedadc.federated.results import RunDirectory
from fedadc.federated.server import FederatedServer
from strategies.launcher import ROOT, LocalSimulation, run_config_text

TINY_RUN = {
    "rounds": 2,
    "num-clients": 3,
    "local-steps": 3,
    "batch-size": 16,
    "seed": 7,
    "overrides": "model.kwargs.embed_dim=32 model.kwargs.depth=4 model.split_at=2 threads=1",
}
"""A few seconds of training: 3 clients x 2 rounds x 3 steps on digits."""


class LocalFlower:
    """One private FLWR_HOME and pair of ports; every `run` reuses its SuperLink."""

    def __init__(self, home: Path) -> None:
        self.simulation = LocalSimulation(home)

    def run(
        self,
        results: Path,
        *,
        extra: str = "",
        workers: int = 1,
        flat: dict | None = None,
        app: Path = ROOT,
    ) -> tuple[Path, str]:
        """`flwr run` of ``app`` (default: this project) with ``flat`` (default TINY_RUN) +
        ``extra`` run config; returns the run directory it wrote under ``results`` and the
        streamed output."""
        flat = TINY_RUN if flat is None else flat
        run_config = f'{run_config_text(flat)} results-dir="{results}" {extra}'
        federation = (
            f"num-supernodes={flat['num-clients']} client-resources-num-cpus={2 // workers}"
        )
        proc = self.simulation.run(
            app, run_config, federation, timeout=400, capture_output=True, text=True
        )
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        runs = [p for p in results.iterdir() if (p / "summary.json").exists()]
        assert len(runs) == 1, proc.stdout[-3000:]
        return runs[0], proc.stdout

    def stop_superlink(self) -> None:
        self.simulation.stop()


def assert_run_equals_the_reference(run, run_dir: Path, reference) -> FederatedServer:
    """The checkpoint a `flwr run` wrote in ``run_dir`` holds the in-process reference's
    ledger records, global head (serialized: bit for bit) and tail weights, bit for bit.
    Returns the server restored from it."""
    server = FederatedServer(run, load_data(run))
    RunDirectory(run_dir).load_checkpoint(server)
    assert server.ledger.records == reference.server.ledger.records
    assert server.global_head == reference.server.global_head
    for a, b in zip(
        server.split.tail.parameters(), reference.server.split.tail.parameters(), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    return server
