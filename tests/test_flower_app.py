"""`flwr run .` (a real local SuperLink and simulation) equals the in-process reference.

Each test run uses its own FLWR_HOME, so its SuperLink is private and is stopped at the
end. Slow (Ray start-up), so the runs are few and tiny.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from fedadc.config import compose, overrides_from_flower
from fedadc.federated.build import load_data
from fedadc.federated.results import RunDirectory
from fedadc.federated.server import FederatedServer
from fedadc.train import train_reference
from fedadc.wire import Payload

ROOT = Path(__file__).parents[1]
FLAT = {
    "rounds": 2,
    "num-clients": 3,
    "local-steps": 3,
    "batch-size": 16,
    "seed": 7,
    "overrides": "model.kwargs.embed_dim=32 model.kwargs.depth=4 model.split_at=2 threads=1",
}

pytestmark = pytest.mark.skipif(shutil.which("flwr") is None, reason="flwr CLI not installed")


@pytest.fixture(scope="module")
def flwr_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("flwr-home")
    yield home
    # the local SuperLink that `flwr run` started for this FLWR_HOME outlives the run
    subprocess.run(["pkill", "-f", str(home)], check=False)


def flower_run(home: Path, results: Path, workers: int) -> Path:
    run_config = (
        " ".join(f"{k}={json.dumps(v) if isinstance(v, str) else v}" for k, v in FLAT.items())
        + f' results-dir="{results}"'
    )
    env = {
        **os.environ,
        "FLWR_HOME": str(home),
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    }
    cpus = 2 // workers
    proc = subprocess.run(
        [
            "flwr",
            "run",
            str(ROOT),
            "--stream",
            "--run-config",
            run_config,
            "--federation-config",
            f"num-supernodes=3 client-resources-num-cpus={cpus}",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    runs = [p for p in results.iterdir() if (p / "summary.json").exists()]
    assert len(runs) == 1, proc.stdout[-3000:]
    assert "round   2" in proc.stdout  # progress lines reach the user
    return runs[0]


def test_flower_simulation_equals_the_in_process_reference(flwr_home, tmp_path):
    run = compose(overrides_from_flower(FLAT))
    reference = train_reference(run)
    summaries = []
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        out.mkdir()
        run_dir = flower_run(flwr_home, out, workers)
        summary = json.loads((run_dir / "summary.json").read_text())
        server = FederatedServer(run, load_data(run))
        RunDirectory(run_dir).load_checkpoint(server)
        assert summary["bytes_up"] == reference.server.ledger.total_bytes("up")
        assert summary["bytes_down"] == reference.server.ledger.total_bytes("down")
        ours = Payload.from_bytes(server.global_head).tensors
        ref = Payload.from_bytes(reference.server.global_head).tensors
        for key in ref:  # bit-identical: same seed, same threads, fixed aggregation order
            torch.testing.assert_close(ours[key], ref[key], rtol=0, atol=0, msg=key)
        for a, b in zip(
            server.split.tail.parameters(), reference.server.split.tail.parameters(), strict=True
        ):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
        summaries.append(summary)
    assert summaries[0]["final_accuracy"] == summaries[1]["final_accuracy"]
