"""A long-lived ClientApp worker on a SuperNode's Runtime API (``--isolation process``).

Stock Flower starts one ``flwr-clientapp`` process per message: Python, flwr, torch and the
app are imported again, and every per-process cache of the app (fedadc's config, data
partition, live model) is rebuilt for every message. This worker does what
``flower-superexec`` + ``flwr-clientapp`` do, in one process that outlives the messages:
acquire a task's token (``AcquireTask``), then Flower's own ``pull_task_input`` -> app ->
``push_message`` -> ``push_task_output``. The app is loaded once per FAB (by its hash); a new
FAB first drops the old app's modules, so a new run of changed code gets that code.

    python -m client_app.warm.worker --runtime-api-address 127.0.0.1:PORT [--poll-s S]

Semantics that differ from stock (see docs): module state survives between messages and
runs; an app that crashes the process loses the message it was handling (its task token
expires and the SuperNode replies with Flower's "ClientApp crashed" error), the launcher
starts a new worker. Runtime dependency installation is not done: the app runs in this
environment, as the project's deployment does anyway.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

from client_app.warm.common import WARM_WORKER_ENV, exit_with_parent, setup_logging
from strategies import flower_private
from strategies.flower_private import RuntimeApi

log = logging.getLogger("fedadc.warm")
DEFAULT_POLL_S = 0.02
DEFAULT_IDLE_POLL_S = 0.25
ACTIVE_WINDOW_S = 30.0


def _top_level_names(app_dir: Path) -> set[str]:
    """Importable top-level names an app directory provides (packages and modules)."""
    names = set()
    for entry in app_dir.iterdir():
        if entry.suffix == ".py":
            names.add(entry.stem)
        elif entry.is_dir() and entry.name.isidentifier():
            names.add(entry.name)
    return names


def _under(file: str | None, folder: Path) -> bool:
    return file is not None and Path(file).resolve().is_relative_to(folder)


def evict_modules(old_dir: Path | None, new_dir: Path) -> list[str]:
    """Drop the old FAB's modules, and any module the new FAB would shadow, from sys.modules.

    As in a fresh ``flwr-clientapp``, the app's packages must come from the new FAB, also
    when a package of the same name was imported from elsewhere (the worker itself lives in
    fedadc's ``client_app`` package). Running code keeps its module objects; only later
    imports see the new ones. C-extension state cannot be unloaded.
    """
    provided = _top_level_names(new_dir)
    dropped = []
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if (old_dir is not None and _under(file, old_dir)) or (
            name.partition(".")[0] in provided and not _under(file, new_dir)
        ):
            del sys.modules[name]
            dropped.append(name)
    if old_dir is not None:
        sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != old_dir]
    importlib.invalidate_caches()
    return dropped


class AppCache:
    """The ClientApp of the last FAB seen (loaded once per FAB hash)."""

    def __init__(self, api: RuntimeApi):
        self.api = api
        self.fab_hash: str | None = None
        self.app_dir: Path | None = None
        self.app: Any = None

    def get(self, run: Any, fab: Any) -> Any:
        if fab.hash_str == self.fab_hash:
            return self.app
        self.api.install_fab(fab.content)
        app_dir = Path(self.api.project_dir(run.fab_id, run.fab_version, fab.hash_str)).resolve()
        dropped = evict_modules(self.app_dir, app_dir)
        log.info(
            "loading the ClientApp of FAB %s (%d modules dropped)", fab.hash_str[:12], len(dropped)
        )
        self.app = self.api.load_client_app(run.fab_id, run.fab_version, fab.hash_str)
        self.fab_hash, self.app_dir = fab.hash_str, app_dir
        return self.app


def serve_task(api: RuntimeApi, address: str, token: str, apps: AppCache) -> str:
    """One task, as ``flwr-clientapp --token`` runs it; returns its final sub-status."""
    client = api.connect(address, token)
    heartbeat = api.start_heartbeat(client)
    message = context = reply = None
    status, details = api.failed, "ClientApp task failed due to unknown reason"
    try:
        message, context, run, fab = api.pull_task_input(client)
        reply = apps.get(run, fab)(message=message, context=context)
        status, details = api.completed, ""
    except Exception as ex:
        log.exception("ClientApp raised an exception")
        details = f"{type(ex)}:<'{ex}'>"
        if message is not None:
            reply = api.error_reply(message, ex)
    finally:
        try:
            if reply is not None and context is not None:
                api.push_message(client, reply, context)
        except Exception:
            log.exception("failed to push the reply message")
            status = api.failed
        api.push_task_output(client, context, status, details)
        if heartbeat.is_running:
            heartbeat.stop()
        client.close()
    return status


def serve_forever(address: str, poll_s: float, idle_poll_s: float) -> None:
    """Acquire and serve ClientApp tasks until the process is stopped."""
    os.environ[WARM_WORKER_ENV] = "1"  # the app keeps a round in memory (client_app.app)
    api = flower_private.runtime_api()
    flower_private.install_fast_pull()  # the message may be visible before its objects
    apps = AppCache(api)
    acquirer = api.connect(address, None)
    last_task = -math.inf
    while True:
        token = api.acquire_client_task(acquirer)
        if token:
            serve_task(api, address, token, apps)
            last_task = time.monotonic()
            continue
        time.sleep(poll_s if time.monotonic() - last_task < ACTIVE_WINDOW_S else idle_poll_s)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runtime-api-address", required=True, help="127.0.0.1:PORT")
    parser.add_argument("--poll-s", type=float, default=DEFAULT_POLL_S)
    parser.add_argument("--idle-poll-s", type=float, default=DEFAULT_IDLE_POLL_S)
    parser.add_argument("--parent-pid", type=int, default=None)
    args = parser.parse_args(argv)
    setup_logging()
    exit_with_parent(args.parent_pid)
    try:
        serve_forever(args.runtime_api_address, args.poll_s, args.idle_poll_s)
    except flower_private.UnsupportedFlowerError as err:
        log.error("%s", err)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
