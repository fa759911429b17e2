"""A run's directory: resolved config, per-round metrics, summary, plot, checkpoint.

Layout::

    <results_dir>/<run name>/
        config.json      the resolved RunConfig
        metrics.jsonl    one JSON object per round (accuracy, loss, bytes, xi, wall time)
        ledger.csv       one row per message (direction, client, round, step, bytes by kind)
        summary.json     final accuracy, stop reason, byte totals and ratios
        accuracy_vs_bytes.png
        checkpoint.pt    global head, tail, tail optimizer, server codec, ledger, history

``resume`` continues from ``checkpoint.pt``: clients keep no state across rounds and every
random choice is derived from (seed, round, step), so a resumed run ends where an
uninterrupted one does. The server may be killed at any point: the checkpoint is replaced
atomically (written to a temporary file, flushed, then ``os.replace``d), and resuming
rewrites ``metrics.jsonl`` from the checkpoint's history, so a kill between appending a
round's metrics and checkpointing it leaves no duplicate or missing round.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict
from pathlib import Path

import torch

from fedadc.config.schema import RunConfig
from fedadc.federated.server import FederatedServer

log = logging.getLogger("fedadc")


RESUMABLE_CHANGES = frozenset(
    {
        "federation.rounds",
        "federation.budget_epochs",
        "federation.timeout_s",
        "results_dir",
    }
)
"""Config keys a resumed run may change (extend the run, or move its directory)."""


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _flatten(tree: dict, prefix: str = "") -> dict[str, object]:
    flat: dict[str, object] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and key not in ("kwargs", "params"):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


class RunDirectory:
    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def create(cls, run: RunConfig, name: str | None = None) -> RunDirectory:
        root = Path(run.results_dir).expanduser().resolve()
        name = name or time.strftime("%Y%m%d-%H%M%S") + f"-{run.method.name}-s{run.seed}"
        path = root / name
        suffix = 1
        while path.exists():
            path = root / f"{name}-{suffix}"
            suffix += 1
        path.mkdir(parents=True)
        _write_atomic(path / "config.json", json.dumps(asdict(run), indent=2, default=str))
        log.info("results directory: %s", path)
        return cls(path)

    def append_round(self, row: dict[str, float]) -> None:
        with open(self.path / "metrics.jsonl", "a") as fh:
            fh.write(json.dumps(row) + "\n")

    # ---------------------------------------------------------------- checkpoint
    def save_checkpoint(self, server: FederatedServer, history: list[dict[str, float]]) -> None:
        state = {
            "round": int(history[-1]["round"]) if history else 0,
            "history": history,
            **server.state_dict(),
        }
        tmp = self.path / "checkpoint.pt.tmp"
        with open(tmp, "wb") as fh:
            torch.save(state, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path / "checkpoint.pt")  # atomic: a kill never leaves half a file

    def load_checkpoint(self, server: FederatedServer) -> tuple[int, list[dict[str, float]]]:
        """Restore ``server`` in place; returns (last finished round, history).

        Refuses a run whose configuration differs from the one that wrote the directory
        (except :data:`RESUMABLE_CHANGES`), and rewrites ``metrics.jsonl`` to exactly the
        checkpointed rounds.
        """
        self.check_same_config(server.run)
        checkpoint = self.path / "checkpoint.pt"
        if not checkpoint.is_file():
            raise FileNotFoundError(
                f"cannot resume: no checkpoint.pt in {self.path} (the run stopped before its "
                "first round finished; start it again without resume)"
            )
        state = torch.load(checkpoint, weights_only=False)
        server.load_state_dict(state)
        history = state["history"]
        _write_atomic(self.path / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in history))
        return state["round"], history

    def check_same_config(self, run: RunConfig) -> None:
        """``ValueError`` naming the keys where ``run`` differs from the saved config."""
        saved_path = self.path / "config.json"
        if not saved_path.is_file():
            raise FileNotFoundError(f"cannot resume: {self.path} has no config.json")
        saved = _flatten(json.loads(saved_path.read_text()))
        now = _flatten(json.loads(json.dumps(asdict(run), default=str)))
        changed = sorted(
            k
            for k in set(saved) | set(now)
            if saved.get(k) != now.get(k) and k not in RESUMABLE_CHANGES
        )
        if changed:
            diffs = ", ".join(f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in changed)
            raise ValueError(
                f"cannot resume {self.path}: the configuration differs from the saved one "
                f"({diffs}); only {sorted(RESUMABLE_CHANGES)} may change on resume"
            )

    # ---------------------------------------------------------------- final
    def finish(
        self, server: FederatedServer, history: list[dict[str, float]], stop_reason: str
    ) -> dict:
        summary = {
            "stop_reason": stop_reason,
            "rounds": len(history),
            "final_accuracy": history[-1]["test_accuracy"] if history else float("nan"),
            "final_loss": history[-1]["test_loss"] if history else float("nan"),
            "wall_s": history[-1]["wall_s"] if history else 0.0,
            **server.ledger.summary(),
        }
        _write_atomic(self.path / "summary.json", json.dumps(summary, indent=2))
        server.ledger.write_csv(self.path / "ledger.csv")
        self.plot(history)
        log.info("results written to %s", self.path)
        return summary

    def plot(self, history: list[dict[str, float]]) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rows = [h for h in history if h["test_accuracy"] == h["test_accuracy"]]  # not NaN
        if not rows:
            return
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(
            [(h["bytes_up"] + h["bytes_down"]) / 1e6 for h in rows],
            [h["test_accuracy"] for h in rows],
            marker="o",
        )
        ax.set_xlabel("cumulative communication (MB, up + down)")
        ax.set_ylabel("test accuracy")
        ax.set_title(self.path.name, fontsize=9)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(self.path / "accuracy_vs_bytes.png", dpi=120)
        plt.close(fig)
