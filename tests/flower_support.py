"""Running a real `flwr run` of this project from tests: private home, ports and results.

`flwr run` starts a local SuperLink that outlives the run and reuses any SuperLink on the
default ports (39091, 39093), also one of another FLWR_HOME; each test therefore gets its
own FLWR_HOME and free ports, and stops its SuperLink at the end (`stop_superlink`).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path

ROOT = Path(__file__).parents[1]
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
        self.home = home
        with socket.socket() as a, socket.socket() as b:  # both bound at once: distinct
            a.bind(("127.0.0.1", 0))
            b.bind(("127.0.0.1", 0))
            self.ports = (a.getsockname()[1], b.getsockname()[1])

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
        run_config = (
            " ".join(f"{k}={json.dumps(v) if isinstance(v, str) else v}" for k, v in flat.items())
            + f' results-dir="{results}" {extra}'
        )
        env = {
            **os.environ,
            "FLWR_HOME": str(self.home),
            "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
            "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(self.ports[0]),
            "FLWR_LOCAL_CONTROL_API_PORT": str(self.ports[1]),
        }
        federation = (
            f"num-supernodes={flat['num-clients']} client-resources-num-cpus={2 // workers}"
        )
        proc = subprocess.run(
            [
                "flwr",
                "run",
                str(app),
                "--stream",
                "--run-config",
                run_config,
                "--federation-config",
                federation,
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=400,
        )
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        runs = [p for p in results.iterdir() if (p / "summary.json").exists()]
        assert len(runs) == 1, proc.stdout[-3000:]
        return runs[0], proc.stdout

    def stop_superlink(self) -> None:
        subprocess.run(["pkill", "-f", str(self.home)], check=False)
