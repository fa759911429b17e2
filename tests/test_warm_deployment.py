"""The project's own apps on warm SuperNodes (`fedadc-supernode`) equal the simulation.

The run of tests/test_deployment.py (2 clients, S = all local steps, tiny ViT, 2 rounds) on a
loopback SuperLink with 2 warm SuperNodes: ledger byte for byte, final head bit for bit and
accuracy as in simulation, as the stock deployment test requires, although every message of
a node is now served by one long-lived process (fedadc's per-process caches persist) that
loaded the FAB's ``client_app`` over the worker's own ``client_app`` package.
"""

from __future__ import annotations

import shutil
import sys

import flwr
import pytest

from strategies import flower_private
from tests.deployment_support import LocalDeployment, free_ports
from tests.flower_support import LocalFlower
from tests.test_deployment import RUN, _assert_same, _only_run, _results

pytestmark = [
    pytest.mark.skipif(
        shutil.which("flower-supernode") is None or shutil.which("flwr") is None,
        reason="flower-supernode / flwr not on PATH (activate the environment)",
    ),
    pytest.mark.skipif(
        flwr.__version__ != flower_private.TESTED_FLWR, reason="the warm runtime needs flwr 1.41.0"
    ),
]


def test_project_apps_on_warm_supernodes_equal_simulation(tmp_path):
    flower = LocalFlower(tmp_path / "sim-home")
    (tmp_path / "sim").mkdir()
    try:
        simulated = _results(flower.run(tmp_path / "sim", flat=RUN, workers=1)[0])
    finally:
        flower.stop_superlink()
    deployment = LocalDeployment(tmp_path / "deploy")
    try:
        deployment.start_superlink()
        for k in range(2):
            cmd = [sys.executable, "-m", "client_app.warm.cli", "--insecure", "--superlink"]
            cmd += [f"127.0.0.1:{deployment.port}", "--port", str(free_ports(1)[0])]
            cmd += ["--node-config", f"partition-id={k} num-partitions=2"]
            deployment._spawn(f"warm-{k}", cmd)
        deployment.wait_online(2, timeout=180)
        results = tmp_path / "results"
        results.mkdir()
        log = deployment.run(RUN, results)
        assert "round   2" in log and "finished (rounds)" in log
        _assert_same(_results(_only_run(results)), simulated)
        for k in range(2):  # one worker served the whole run
            assert deployment.log_text(f"warm-{k}").count("ClientApp worker pid") == 1
    finally:
        deployment.stop()
    assert deployment.alive() == []
