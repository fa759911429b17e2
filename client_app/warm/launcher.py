"""Start the patched SuperNode and its ClientApp worker, and keep the worker alive.

The SuperNode is the node: if it ends, the launcher stops the worker and exits non-zero
(a service manager restarts the whole thing). The worker is replaceable: if it ends (a crash,
a kill, an app that called ``sys.exit``), the launcher logs it and starts a new one; the
message it was handling, if any, is answered by Flower's task expiry with an error reply,
as a crashed ``flwr-clientapp`` is.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from types import FrameType

log = logging.getLogger("fedadc.warm")
RUNTIME_HOST = "127.0.0.1"
SUPERVISE_EVERY_S = 0.2
FAST_CRASH_S = 5.0  # a worker that dies sooner than this is restarted after a pause
STOP_TIMEOUT_S = 10.0


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((RUNTIME_HOST, port)) == 0


@dataclass
class WarmLauncher:
    """The two processes of one warm SuperNode.

    Args:
        flower_args: ``flower-supernode`` arguments (without ``--isolation``/``--port``).
        port: the Runtime API port on 127.0.0.1.
        supernode_opts / worker_opts: extra arguments of `supernode` / `worker`.
    """

    flower_args: list[str]
    port: int
    supernode_opts: list[str] = field(default_factory=list)
    worker_opts: list[str] = field(default_factory=list)
    node: subprocess.Popen | None = None
    worker: subprocess.Popen | None = None
    restarts: int = 0

    def _python(self, module: str, *args: str) -> subprocess.Popen:
        cmd = [sys.executable, "-m", module, "--parent-pid", str(os.getpid()), *args]
        return subprocess.Popen(cmd)

    def start_node(self) -> None:
        self.node = self._python(
            "client_app.warm.supernode",
            *self.supernode_opts,
            *self.flower_args,
            "--isolation",
            "process",
            "--host",
            RUNTIME_HOST,
            "--port",
            str(self.port),
        )
        log.info("SuperNode pid %d, Runtime API on %s:%d", self.node.pid, RUNTIME_HOST, self.port)

    def wait_runtime_api(self, timeout_s: float = 300.0) -> bool:
        deadline = time.monotonic() + timeout_s
        while not port_open(self.port):
            if self.node is None or self.node.poll() is not None or time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True

    def start_worker(self) -> None:
        self.worker = self._python(
            "client_app.warm.worker",
            "--runtime-api-address",
            f"{RUNTIME_HOST}:{self.port}",
            *self.worker_opts,
        )
        log.info("ClientApp worker pid %d started", self.worker.pid)

    def supervise(self) -> int:
        """Run until the SuperNode ends; returns the exit code for the launcher."""
        assert self.node is not None and self.worker is not None
        worker_started = time.monotonic()
        while True:
            if (rc := self.node.poll()) is not None:
                log.error("the SuperNode (pid %d) exited with %s; stopping", self.node.pid, rc)
                return rc or 1
            if (rc := self.worker.poll()) is not None:
                lived = time.monotonic() - worker_started
                self.restarts += 1
                log.warning(
                    "ClientApp worker pid %d exited with %s after %.1f s; restarting (restart %d)",
                    self.worker.pid,
                    rc,
                    lived,
                    self.restarts,
                )
                if lived < FAST_CRASH_S:
                    time.sleep(min(FAST_CRASH_S, self.restarts))
                self.start_worker()
                worker_started = time.monotonic()
            time.sleep(SUPERVISE_EVERY_S)

    def stop(self) -> None:
        for proc in (self.worker, self.node):
            if proc is not None and proc.poll() is None:
                proc.terminate()
        for proc in (self.worker, self.node):
            if proc is None:
                continue
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=STOP_TIMEOUT_S)

    def run(self) -> int:
        """Start both processes, supervise, and always stop them at the end."""

        def on_signal(signum: int, _frame: FrameType | None) -> None:
            raise SystemExit(128 + signum)

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        try:
            self.start_node()
            if not self.wait_runtime_api():
                log.error("the SuperNode's Runtime API did not come up on port %d", self.port)
                return (self.node.poll() if self.node else None) or 1
            self.start_worker()
            return self.supervise()
        except SystemExit as stop:
            log.info("stopping (signal)")
            return 0 if stop.code in (128 + signal.SIGTERM, 128 + signal.SIGINT) else 1
        finally:
            self.stop()
