"""A real deployment on 127.0.0.1 (SuperLink + 2 SuperNodes as processes) equals simulation.

The tests start the processes with the scripts in ``deploy/`` and submit the run with
``flwr run . <connection> --stream``; `LocalDeployment.stop` kills every process they
started, also when a test fails. The insecure run is done twice: on the warm runtime
(the scripts' default: one long-lived ClientApp worker per SuperNode, which must serve the
whole run) and on stock Flower (``--stock``: a ClientApp process per message, about 12 s per
exchange), so warm == simulation == stock. The runs are tiny: 2 clients, S = all local
steps (2 exchanges per round), a 2-layer-head ViT of width 32; the stock run and the TLS +
node-auth test (warm) train one round. About 4 minutes on 2 CPU cores, half of it the stock
run.

What "equal" means: the same seed and `threads=1` give the same computation in every
process, and a deployment ClientApp (a new process per message) recomputes what it needs
from ``context.state`` exactly as a simulation worker does (docs/flower.md, "Client
state"). So the ledger (every payload's bytes by kind) must be byte-identical and the
final heads bit-identical; accuracy is compared to within half a test sample
(0.5 / len(test)), i.e. the same number of correctly classified test images, which stays
meaningful if the summary's float ever goes through another formatting path.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path

import pytest
import torch

from fedadc.wire import Payload
from strategies.local_deployment import DEPLOY, LocalDeployment
from tests.flower_support import TINY_RUN, LocalFlower

needs_flower = pytest.mark.skipif(
    shutil.which("flwr") is None or shutil.which("flower-superlink") is None,
    reason="flwr / flower-superlink not on PATH (activate the environment)",
)

RUN = {**TINY_RUN, "num-clients": 2, "steps-per-message": 0}
"""TINY_RUN with 2 clients and one message per local phase (2 exchanges per round)."""
ONE_ROUND = {**RUN, "rounds": 1}
"""The TLS test trains one round only (deployment exchanges cost seconds each)."""


def _results(run_dir: Path) -> dict:
    summary = json.loads((run_dir / "summary.json").read_text())
    head = Payload.from_bytes(
        torch.load(run_dir / "checkpoint.pt", weights_only=False)["global_head"]
    ).tensors
    return {
        "summary": summary,
        "ledger": (run_dir / "ledger.csv").read_bytes(),
        "head": head,
        "rows": [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()],
    }


def _only_run(results: Path) -> Path:
    runs = [p for p in results.iterdir() if (p / "summary.json").exists()]
    assert len(runs) == 1, runs
    return runs[0]


def _assert_same(deployed: dict, simulated: dict) -> None:
    """Same run in deployment and simulation: bytes, accuracy, final heads."""
    a, b = deployed["summary"], simulated["summary"]
    assert a["stop_reason"] == b["stop_reason"] == "rounds"
    assert a["rounds"] == b["rounds"]
    assert deployed["ledger"] == simulated["ledger"]  # every payload, byte for byte
    for key in ("bytes_up", "bytes_down", "bytes_by_kind", "messages", "realised_xi"):
        assert a[key] == b[key], key
    assert abs(a["final_accuracy"] - b["final_accuracy"]) <= 0.5 / _n_test()
    for key, tensor in simulated["head"].items():
        torch.testing.assert_close(deployed["head"][key], tensor, rtol=0, atol=0, msg=key)


def _assert_same_first_round(deployed: dict, simulated: dict) -> None:
    """A 1-round deployment equals round 1 of the 2-round simulation (the number of
    rounds changes nothing in round 1): its ledger rows and its metrics row."""

    def round_one(ledger: bytes) -> list[bytes]:
        header, *rows = ledger.splitlines()
        return [header] + [r for r in rows if r.split(b",")[2] == b"1"]

    assert deployed["summary"]["rounds"] == 1
    assert round_one(deployed["ledger"]) == round_one(simulated["ledger"])
    ours, theirs = deployed["rows"][0], simulated["rows"][0]
    for key in ("clients", "bytes_up", "bytes_down", "realised_xi", "train_loss"):
        assert ours[key] == theirs[key], key
    assert abs(ours["test_accuracy"] - theirs["test_accuracy"]) <= 0.5 / _n_test()


def _n_test() -> int:
    from fedadc.config import compose
    from fedadc.federated.build import load_data
    from strategies.run_config import overrides_from_flower

    return len(load_data(compose(overrides_from_flower(RUN))).test)


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    """RUN in simulation (`flwr run` with a private local SuperLink), started in the
    background: the deployment mostly waits on Flower, so both overlap. A future."""
    flower = LocalFlower(tmp_path_factory.mktemp("sim-home"))
    results = tmp_path_factory.mktemp("sim-results")

    def run() -> dict:
        run_dir, _ = flower.run(results, flat=RUN, workers=1)
        return _results(run_dir)

    with ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(run)
        try:
            yield future
        finally:
            wait([future], timeout=600)  # never leave it running (errors show in the tests)
            flower.stop_superlink()


def _assert_one_worker_served_each_node(deployment: LocalDeployment, names: list[str]) -> None:
    for name in names:
        log = deployment.log_text(name)
        assert "mode: warm runtime" in log, log[-2000:]
        assert len(re.findall(r"ClientApp worker pid \d+ started", log)) == 1, log[-2000:]
        assert "restarting" not in log, log[-2000:]  # one worker served the whole run


@needs_flower
@pytest.mark.parametrize("runtime", ["warm", "stock"])
def test_insecure_deployment_equals_simulation(tmp_path, simulated, runtime):
    deployment = LocalDeployment(tmp_path)
    try:
        deployment.start_superlink()
        for pid in range(2):
            deployment.start_supernode(pid, 2, stock=runtime == "stock")
        assert len(deployment.wait_online(2)) == 2
        results = tmp_path / "results"
        results.mkdir()
        if runtime == "warm":
            log = deployment.run(RUN, results)
            assert "round   2" in log and "finished (rounds)" in log
            _assert_same(_results(_only_run(results)), simulated.result(timeout=600))
            _assert_one_worker_served_each_node(deployment, ["supernode-0", "supernode-1"])
        else:  # a stock exchange costs ~12 s: one round, as the TLS test
            log = deployment.run(ONE_ROUND, results)
            assert "finished (rounds)" in log
            _assert_same_first_round(_results(_only_run(results)), simulated.result(timeout=600))
    finally:
        deployment.stop()
    assert deployment.alive() == []


@needs_flower
@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")
@pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="ssh-keygen not installed")
def test_tls_and_node_auth_deployment_refuses_unknown_nodes(tmp_path, simulated):
    certs, keys = tmp_path / "certs", tmp_path / "keys"
    subprocess.run([DEPLOY / "make_certificates.sh", "127.0.0.1", certs], check=True)
    subprocess.run([DEPLOY / "make_node_keys.sh", "3", keys], check=True)
    deployment = LocalDeployment(tmp_path, certs=certs, node_auth=True)
    try:
        deployment.start_superlink()
        registered = {deployment.register(keys / f"node_{i}.pub") for i in range(2)}
        # node_2's key exists but was never registered
        rogue = deployment.start_supernode(1, 2, key=keys / "node_2", name="rogue")
        for pid in range(2):
            deployment.start_supernode(pid, 2, key=keys / f"node_{pid}")
        nodes = deployment.wait_online(2)
        try:
            rogue.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail(
                "a SuperNode with an unregistered key kept running:\n"
                + deployment.log_text("rogue")[-2000:]
            )
        assert rogue.returncode != 0
        assert "Failed to activate SuperNode" in deployment.log_text("rogue")
        assert set(nodes) == registered  # the SuperLink knows only the registered nodes
        assert all(status == "online" for status in nodes.values())

        results = tmp_path / "results"
        results.mkdir()
        started = time.monotonic()
        log = deployment.run(ONE_ROUND, results)
        assert "finished (rounds)" in log, log[-2000:]
        assert time.monotonic() - started < 300
        _assert_same_first_round(_results(_only_run(results)), simulated.result(timeout=600))
        _assert_one_worker_served_each_node(deployment, ["supernode-0", "supernode-1"])
    finally:
        deployment.stop()
    assert deployment.alive() == []


def test_node_config_data_path_replaces_the_runs_data_path():
    from flwr.app import Context, RecordDict

    from client_app.app import _node_run

    def context(node_config: dict, run_config: dict) -> Context:
        return Context(
            run_id=1, node_id=2, node_config=node_config, state=RecordDict(), run_config=run_config
        )

    on_disk = {"data": "imagefolder", "overrides": "data.path=/server/images"}
    assert _node_run(context({"data-path": "/device/images"}, on_disk)).data.path == (
        "/device/images"
    )
    assert _node_run(context({}, on_disk)).data.path == "/server/images"
    with pytest.raises(ValueError, match="data-path"):
        _node_run(context({"data-path": "/device/images"}, {}))  # digits: nothing to move
