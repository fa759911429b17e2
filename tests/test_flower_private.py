"""The private Flower patches: refused on any other flwr, installed and undone on 1.41.0."""

from __future__ import annotations

import time

import flwr
import pytest
from flwr.supercore.inflatable import inflatable_utils as iu
from flwr.supernode import start_client_internal as sci

from strategies import flower_private as fp

pytestmark = pytest.mark.skipif(
    flwr.__version__ != fp.TESTED_FLWR, reason=f"the patches target flwr {fp.TESTED_FLWR}"
)


@pytest.fixture(autouse=True)
def _restore():
    yield
    fp.uninstall_supernode_patches()


@pytest.mark.parametrize(
    "entry",
    [fp.install_supernode_patches, fp.install_fast_pull, fp.runtime_api, fp.check_flower_version],
)
def test_refuses_another_flower_with_the_way_back(monkeypatch, entry):
    monkeypatch.setattr(flwr, "__version__", "1.42.0")
    with pytest.raises(fp.UnsupportedFlowerError) as err:
        entry()
    text = str(err.value)
    assert "1.42.0" in text and fp.TESTED_FLWR in text
    assert "--stock" in text and "flower-supernode" in text and "fast-deploy=false" in text
    assert sci.time is time and iu.pull_objects.__kwdefaults__["initial_backoff"] == 1


def test_refuses_changed_literals(monkeypatch):
    source = "time.sleep(3)\ntime.sleep(1)\n"  # a Flower whose waits moved
    monkeypatch.setattr(fp.inspect, "getsource", lambda _obj: source)
    with pytest.raises(fp.UnsupportedFlowerError, match=r"time\.sleep\(0\.5\)"):
        fp.install_supernode_patches()
    assert sci.time is time


def test_refuses_changed_pull_default(monkeypatch):
    monkeypatch.setitem(iu.pull_objects.__kwdefaults__, "initial_backoff", 2)
    with pytest.raises(fp.UnsupportedFlowerError, match="initial_backoff"):
        fp.install_fast_pull()


def test_install_changes_the_waits_and_uninstall_restores_them():
    original_pull = sci._pull_and_store_message
    shim = fp.install_supernode_patches(fp.SupernodeTiming(active_poll_s=0.02, reply_wait_s=0.005))
    assert sci.time is shim and sci._pull_and_store_message is not original_pull
    for fn in (iu.pull_objects, iu.pull_and_inflate_object_from_tree):
        assert fn.__kwdefaults__["initial_backoff"] == fp.FAST_PULL_BACKOFF_S
    assert fp.install_supernode_patches() is shim  # idempotent: only the timing changes
    fp.uninstall_supernode_patches()
    assert sci.time is time and sci._pull_and_store_message is original_pull
    for fn in (iu.pull_objects, iu.pull_and_inflate_object_from_tree):
        assert fn.__kwdefaults__["initial_backoff"] == 1


def test_adaptive_poll_follows_messages(monkeypatch):
    slept: list[float] = []
    monkeypatch.setattr(fp.time, "sleep", slept.append)
    now = [100.0]
    shim = fp.AdaptiveTime(fp.SupernodeTiming(0.03, 0.01, 30.0), clock=lambda: now[0])
    shim.sleep(3)  # no message yet: Flower's idle poll
    shim.mark_active()
    shim.sleep(3)
    shim.sleep(0.5)
    shim.sleep(1.25)  # any other wait is left alone
    now[0] += 31  # 31 s without a message: idle again
    shim.sleep(3)
    assert slept == [3, 0.03, 0.01, 1.25, 3]
    assert shim.monotonic is time.monotonic  # the rest is the real module


def test_message_seen_marks_the_node_active(monkeypatch):
    results = iter([None, 7])
    monkeypatch.setattr(sci, "_pull_and_store_message", lambda **_kw: next(results))
    shim = fp.install_supernode_patches()
    assert sci._pull_and_store_message() is None and shim.idle_poll_s() == 3
    assert sci._pull_and_store_message() == 7
    assert shim.idle_poll_s() == fp.DEFAULT_ACTIVE_POLL_S


def test_runtime_api_on_the_tested_flower():
    api = fp.runtime_api()
    assert api.pull_task_input.__module__ == "flwr.supernode.runtime.run_clientapp"
    assert (api.completed, api.failed) == ("completed", "failed")
