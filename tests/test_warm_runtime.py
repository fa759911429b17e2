"""The warm runtime (`fedadc-supernode`) on a real loopback deployment, and its CLI.

Integration (one SuperLink, 2 warm SuperNodes, the PID-reporting app in tests/warm_app):
every reply correct, ``context.state`` carried from message to message, exactly one worker
PID per SuperNode for all messages (also across runs); a killed worker is restarted by its
launcher and serves the next run; a dead SuperNode makes the launcher exit non-zero and stop
its worker. A worker killed *during* a message loses that message: Flower's task-token expiry
answers it with an error reply (the client is dropped for that exchange, as a crashed
``flwr-clientapp`` is); that path waits for Flower's expiry and is not run here.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sys
import time
from pathlib import Path

import flwr
import pytest

from client_app.warm import cli
from client_app.warm.worker import evict_modules
from strategies import flower_private
from strategies.launcher import ROOT
from strategies.local_deployment import CONNECTION, LocalDeployment

APP = ROOT / "tests" / "warm_app"
BIN = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
needs_flower = pytest.mark.skipif(
    shutil.which("flower-supernode", path=BIN) is None, reason="flower-supernode not on PATH"
)
on_tested_flower = pytest.mark.skipif(
    flwr.__version__ != flower_private.TESTED_FLWR, reason="the warm runtime needs flwr 1.41.0"
)


# ------------------------------------------------------------------------------ CLI
def test_stock_execs_plain_flower_supernode(monkeypatch):
    calls = []
    monkeypatch.setattr(cli.os, "execv", lambda exe, args: calls.append(args))
    cli.main(["--stock", "--superlink", "h:1", "--insecure", "--port", "9100"])
    assert calls[0][0].endswith("flower-supernode")
    assert calls[0][1:] == ["--superlink", "h:1", "--insecure", "--port", "9100"]


def test_warm_refuses_another_flower(monkeypatch):
    monkeypatch.setattr(flwr, "__version__", "1.40.0")
    with pytest.raises(SystemExit) as err:
        cli.main(["--superlink", "h:1", "--insecure"])
    assert "1.40.0" in str(err.value.code) and "--stock" in str(err.value.code)


@pytest.mark.parametrize("flag", ["--isolation=subprocess", "--ssl-certfile", "--host"])
def test_warm_refuses_flags_it_cannot_honour(flag):
    with pytest.raises(SystemExit) as err:
        cli.main(["--insecure", flag, "x"])
    assert "--stock" in str(err.value.code)


def test_new_fab_replaces_the_old_apps_modules(tmp_path, monkeypatch):
    old, new = tmp_path / "old", tmp_path / "new"
    for fab, value in ((old, 1), (new, 2)):
        (fab / "warm_probe_pkg").mkdir(parents=True)
        (fab / "warm_probe_pkg" / "__init__.py").write_text(f"VALUE = {value}\n")
    monkeypatch.syspath_prepend(str(old))
    import warm_probe_pkg

    assert warm_probe_pkg.VALUE == 1
    monkeypatch.syspath_prepend(str(new))
    assert "warm_probe_pkg" in evict_modules(old.resolve(), new.resolve())
    assert str(old) not in sys.path
    import warm_probe_pkg as reloaded

    assert reloaded.VALUE == 2
    sys.modules.pop("warm_probe_pkg", None)


# ---------------------------------------------------------------------- deployment
def _log_pids(log: str, what: str) -> list[int]:
    """PIDs the launcher logged as started (``SuperNode pid N, ...``, ``... pid N started``);
    not those it logged as exited."""
    return [int(p) for p in re.findall(rf"{what} pid (\d+)(?:,| started)", log)]


def _start(root: Path) -> LocalDeployment:
    """A SuperLink and 2 SuperNodes started by deploy/start_supernode.sh (warm by default),
    both online. (TLS + node auth with the warm runtime: tests/test_deployment.py.)"""
    deployment = LocalDeployment(root)
    try:
        deployment.start_superlink()
        for k in range(2):
            deployment.start_supernode(k, 2, name=f"warm-{k}")
        deployment.wait_online(2, timeout=180)
    except BaseException:
        deployment.stop()
        raise
    return deployment


@pytest.fixture(scope="module")
def warm(tmp_path_factory):
    deployment = _start(tmp_path_factory.mktemp("warm"))
    yield deployment
    deployment.stop()


def _run(deployment: LocalDeployment, name: str, exchanges: int) -> list[list[dict]]:
    out = deployment.root / f"{name}.json"
    config = f'exchanges={exchanges} poll-s=0.05 fast-pull=true fedadc-root="{ROOT}" out="{out}"'
    answer = deployment.flwr(
        "run", str(APP), CONNECTION, "--stream", "--run-config", config, timeout=300
    )
    assert answer.returncode == 0 and out.exists(), answer.stdout[-3000:] + answer.stderr[-3000:]
    served = json.loads(out.read_text())["served"]
    assert len(served) == exchanges
    for i, replies in enumerate(served):
        assert len(replies) == 2 and all("error" not in r and r["i"] == i for r in replies), replies
    return served


def _by_node(served: list[list[dict]]) -> dict[int, list[dict]]:
    nodes: dict[int, list[dict]] = {}
    for replies in served:
        for r in replies:
            nodes.setdefault(r["node"], []).append(r)
    return nodes


def _workers(deployment: LocalDeployment) -> dict[int, list[int]]:
    return {k: _log_pids(deployment.log_text(f"warm-{k}"), "ClientApp worker") for k in range(2)}


@needs_flower
@on_tested_flower
def test_one_warm_worker_serves_every_message_with_its_state(warm):
    log = warm.log_text("warm-0")
    assert "mode: warm runtime" in log
    nodes = _by_node(_run(warm, "run1", 5))
    assert len(nodes) == 2
    workers = _workers(warm)
    for replies in nodes.values():
        assert [r["count"] for r in replies] == [1, 2, 3, 4, 5]  # context.state persisted
        (pid,) = {r["pid"] for r in replies}  # one process served all of this node's messages
        assert pid in (workers[0][-1], workers[1][-1])
    assert len({r[0]["pid"] for r in nodes.values()}) == 2


@needs_flower
@on_tested_flower
def test_killed_worker_is_restarted_and_serves_the_next_run(warm):
    before = _workers(warm)
    os.kill(before[0][-1], signal.SIGKILL)
    deadline = time.monotonic() + 120
    while len(_workers(warm)[0]) == len(before[0]):
        assert time.monotonic() < deadline, warm.log_text("warm-0")[-3000:]
        time.sleep(0.3)
    assert "restarting" in warm.log_text("warm-0")
    restarted = _workers(warm)[0][-1]
    nodes = _by_node(_run(warm, "run2", 3))
    pids = {frozenset(r["pid"] for r in replies) for replies in nodes.values()}
    assert pids == {frozenset({restarted}), frozenset({before[1][-1]})}  # the other kept its
    for replies in nodes.values():
        assert [r["count"] for r in replies] == [1, 2, 3]  # a new run: a new context


@needs_flower
@on_tested_flower
def test_dead_supernode_stops_the_launcher_and_its_worker(warm):
    launcher = warm.procs["warm-1"]
    (node_pid,) = _log_pids(warm.log_text("warm-1"), "SuperNode")
    worker_pid = _workers(warm)[1][-1]
    os.kill(node_pid, signal.SIGKILL)
    assert launcher.wait(timeout=60) != 0
    deadline = time.monotonic() + 30
    while Path(f"/proc/{worker_pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert (
        not Path(f"/proc/{worker_pid}").exists()
        or "Z" in Path(f"/proc/{worker_pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    )
