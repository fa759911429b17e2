"""A real Flower deployment on the loopback address, for the tests and benchmarks.

`LocalDeployment` starts a SuperLink and SuperNodes as separate processes through the
scripts in ``deploy/`` (so the tests exercise what users run), each with its own
FLWR_HOME (as if on its own device) and free ports, writes a `flwr` connection for it,
submits runs with ``flwr run . <connection> --stream`` and stops every process it started
(`stop`): the process groups of the SuperLink and SuperNodes, and the processes Flower
detaches from them (the SuperLink's SuperExec starts its own session; it is found by the
private runtime port on its command line).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from strategies.launcher import (
    ROOT,
    children,
    free_ports,
    is_running,
    pids_mentioning,
    run_config_text,
)

DEPLOY = ROOT / "deploy"
CONNECTION = "fedadc-test"


class LocalDeployment:
    """SuperLink + SuperNodes on 127.0.0.1 under ``root`` (homes, logs, certificates).

    Args:
        root: a private directory (a test's ``tmp_path``).
        certs: directory with ca.crt/server.pem/server.key for TLS (None: insecure).
        node_auth: start the SuperLink with SuperNode authentication (needs ``certs``).
    """

    def __init__(self, root: Path, *, certs: Path | None = None, node_auth: bool = False):
        self.root = root
        self.certs = certs
        self.node_auth = node_auth
        self.port = free_ports(1)[0]
        self.procs: dict[str, subprocess.Popen] = {}
        self.logs: dict[str, Path] = {}
        self.cli_home = root / "cli-home"
        self.cli_home.mkdir(parents=True, exist_ok=True)
        self._write_connection()

    # ------------------------------------------------------------------ processes
    def _env(self, home: Path) -> dict[str, str]:
        home.mkdir(parents=True, exist_ok=True)
        return {
            **os.environ,
            # the Flower commands of this interpreter's environment come first
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "FLWR_HOME": str(home),
            "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
            "PYTHONUNBUFFERED": "1",
        }

    def _spawn(self, name: str, cmd: list[str]) -> subprocess.Popen:
        log = self.root / f"{name}.log"
        self.logs[name] = log
        with log.open("wb") as out:
            proc = subprocess.Popen(
                cmd,
                cwd=self.root,
                env=self._env(self.root / f"{name}-home"),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stop() kills all of it
            )
        self.procs[name] = proc
        return proc

    def log_text(self, name: str) -> str:
        return self.logs[name].read_text(errors="replace") if name in self.logs else ""

    def start_superlink(self) -> subprocess.Popen:
        cmd = [str(DEPLOY / "start_superlink.sh"), "--host", "127.0.0.1", "--port", str(self.port)]
        if self.certs is not None:
            cmd += ["--tls", str(self.certs)]
        if self.node_auth:
            cmd += ["--node-auth"]
        proc = self._spawn("superlink", cmd)
        self._wait_until(
            lambda: (
                "Starting the SuperLink" in self.log_text("superlink")
                and self._port_open(self.port)
            ),
            what="the SuperLink to listen",
            proc_name="superlink",
        )
        return proc

    def start_supernode(
        self,
        partition: int,
        total: int,
        *,
        key: Path | None = None,
        name: str | None = None,
        stock: bool = False,
        extra: tuple[str, ...] = (),
    ) -> subprocess.Popen:
        """A SuperNode through ``deploy/start_supernode.sh``: the warm runtime, or plain
        Flower with ``stock``; ``extra`` goes to fedadc-supernode / flower-supernode."""
        name = name or f"supernode-{partition}"
        cmd = [
            str(DEPLOY / "start_supernode.sh"),
            str(partition),
            str(total),
            "--superlink",
            f"127.0.0.1:{self.port}",
            "--port",
            str(free_ports(1)[0]),
        ]
        if self.certs is not None:
            cmd += ["--tls", str(self.certs / "ca.crt")]
        if key is not None:
            cmd += ["--key", str(key)]
        if stock:
            cmd += ["--stock"]
        if extra:
            cmd += ["--", *extra]
        return self._spawn(name, cmd)

    def stop(self) -> None:
        """Stop every process started here and everything Flower started for them."""
        doomed: set[int] = set()
        for proc in self.procs.values():
            doomed.update([proc.pid, *children(proc.pid)])
        # detached helpers (SuperExec, ServerApp) carry this deployment's port
        doomed.update(pids_mentioning(f"127.0.0.1:{self.port}"))
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        for pid in doomed | set(pids_mentioning(f"127.0.0.1:{self.port}")):
            try:
                if os.getpgid(pid) == pid:  # a group leader (a detached helper)
                    os.killpg(pid, signal.SIGKILL)
                else:
                    os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        deadline = time.monotonic() + 10
        while self.alive() and time.monotonic() < deadline:  # killed ones may linger briefly
            time.sleep(0.2)

    def alive(self) -> list[int]:
        """Pids of processes of this deployment still running (empty after `stop`)."""
        pids = [p.pid for p in self.procs.values() if p.poll() is None]
        return pids + [p for p in pids_mentioning(f"127.0.0.1:{self.port}") if is_running(p)]

    # ------------------------------------------------------------------ flwr CLI
    def _write_connection(self) -> None:
        lines = ["[superlink]", f'default = "{CONNECTION}"', "", f"[superlink.{CONNECTION}]"]
        lines.append(f'address = "127.0.0.1:{self.port}"')
        if self.certs is None:
            lines.append("insecure = true")
        else:
            lines.append(f'root-certificates = "{self.certs / "ca.crt"}"')
        (self.cli_home / "config.toml").write_text("\n".join(lines) + "\n")

    def flwr(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["flwr", *args],
            cwd=ROOT,
            env=self._env(self.cli_home),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def flwr_json(self, *args: str) -> dict:
        """A `flwr ... --format json` command's answer (it exits 0 also on failure)."""
        out = self.flwr(*args, "--format", "json")
        text = out.stdout[out.stdout.find("{") :]
        try:
            answer = json.loads(text)
        except json.JSONDecodeError:
            raise AssertionError(f"flwr {' '.join(args)}: {out.stdout}{out.stderr}") from None
        if not answer.get("success"):
            raise RuntimeError(f"flwr {' '.join(args)}: {answer.get('error-message')}")
        return answer

    def register(self, public_key: Path) -> int:
        """Register a SuperNode's public key; returns the node id the SuperLink gave it."""
        return int(self.flwr_json("supernode", "register", str(public_key), CONNECTION)["node-id"])

    def nodes(self) -> dict[int, str]:
        """Node id -> status ('registered', 'online', ...) as the SuperLink lists them."""
        listed = self.flwr_json("supernode", "list", CONNECTION)["nodes"]
        return {int(n["node-id"]): n["status"] for n in listed}

    def wait_online(self, count: int, timeout: float = 60) -> dict[int, str]:
        self._wait_until(
            lambda: sum(s == "online" for s in self.nodes().values()) >= count,
            what=f"{count} SuperNodes online",
            timeout=timeout,
        )
        return self.nodes()

    def run(self, flat: dict, results: Path, *, extra: str = "", timeout: float = 300) -> str:
        """`flwr run . <connection> --stream`; returns the streamed output."""
        out = self.flwr(
            "run",
            str(ROOT),
            CONNECTION,
            "--stream",
            "--run-config",
            f'{run_config_text(flat)} results-dir="{results}" {extra}'.strip(),
            timeout=timeout,
        )
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        return out.stdout + out.stderr

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _port_open(port: int) -> bool:
        with socket.socket() as s:
            s.settimeout(0.5)
            return s.connect_ex(("127.0.0.1", port)) == 0

    def _wait_until(self, ok, *, what: str, timeout: float = 60, proc_name: str = "") -> None:
        deadline = time.monotonic() + timeout
        while not ok():
            proc = self.procs.get(proc_name)
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(
                    f"{proc_name} exited while waiting for {what}:\n"
                    + self.log_text(proc_name)[-3000:]
                )
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out waiting for {what}")
            time.sleep(0.3)
