"""A run's directory: resolved config, per-round metrics, summary, plot, checkpoint.

Layout::

    <results_dir>/<run name>/
        config.json      the resolved RunConfig
        metrics.jsonl    one JSON object per round (accuracy, loss, bytes, xi, wall time,
                         seconds per step by component: fedadc.federated.timing)
        ledger.csv       one row per message (direction, client, round, step, bytes by kind)
        summary.json     final accuracy, stop reason, byte totals and ratios, s/step, the
                         data (shape, rows, the pixel mean/std it was normalised with)
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

import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict
from pathlib import Path

import torch

from fedadc.compression.registry import ratio_params
from fedadc.config.schema import RunConfig
from fedadc.data.tensors import ImageData
from fedadc.evaluation import METRIC_KEYS
from fedadc.federated.server import FederatedServer
from fedadc.federated.timing import summarize

log = logging.getLogger("fedadc")


RESULT_NEUTRAL = frozenset({"results_dir", "device", "threads", "federation.timeout_s"})
"""Config keys that say where or how a run executes, not what it computes: left out of its
identity, so the same run resumed elsewhere, on another device or with another thread count
finds its directory, and a report never counts it as a second run of the same seed. (Device
and thread count may change float rounding, never the method, data or schedule.)"""

RESUMABLE_CHANGES = RESULT_NEUTRAL | {"federation.rounds", "federation.budget_epochs"}
"""Config keys a resumed run may change (extend the run, or move its directory)."""

ADDED_LATER = {
    "precision": "fp32",
    "optim.schedule": "constant",
    "optim.warmup": 0.0,
    "optim.cooldown": 0.0,
    "optim.client_state": "reset",
    "federation.head_momentum": 0.0,
    "federation.tail_update": "per_client",
    "federation.shape": "standard",
    "federation.head_lr": 1.0,
    "model.end_blocks": 0,
    "model.head_trainable": True,
}
"""Keys added after runs were recorded, with the value an older config.json implies: a
config without them reads as these values, and a key at its value is left out of
:func:`identity`, so older runs keep their names and resume."""

PARTIAL_FILES = ("metrics.jsonl", "ledger.csv", "accuracy_vs_bytes.png", "checkpoint.pt.tmp")
"""What a run killed before its first checkpoint leaves behind (removed when it restarts)."""

_UNSAFE = re.compile(r"[^A-Za-z0-9._+\-]")


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def config_dict(run: RunConfig) -> dict:
    """The resolved config as config.json records it (JSON round trip)."""
    return json.loads(json.dumps(asdict(run), default=str))


def data_record(data: ImageData) -> dict:
    """What summary.json records of the data: enough to see, and to pin with
    ``data.mean``/``data.std``, what the model was fed."""
    record: dict = {
        "name": data.name,
        "image_shape": list(data.image_shape),
        "train_rows": len(data.train),
        "test_rows": len(data.test),
        "num_classes": data.num_classes,
    }
    if data.normalization is not None:
        record["normalization"] = data.normalization.record()
    return record


def flatten(tree: Mapping, prefix: str = "") -> dict[str, object]:
    """Dotted keys -> leaf values; non-empty mappings (method params, model kwargs too) are
    walked into, so two configs differ exactly where their flat forms do."""
    flat: dict[str, object] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def identity(config: RunConfig | Mapping, ignore: Iterable[str] = ()) -> str:
    """Canonical JSON of what a run computes: equal strings, the same run.

    ``config`` is a RunConfig or its saved ``config.json``; :data:`RESULT_NEUTRAL` keys and
    ``ignore`` (e.g. ``("seed",)`` to group seeds) are left out."""
    data = config_dict(config) if isinstance(config, RunConfig) else config
    skip = RESULT_NEUTRAL | set(ignore)
    flat = {
        k: v
        for k, v in flatten(data).items()
        if k not in skip and not (k in ADDED_LATER and ADDED_LATER[k] == v)
    }
    return json.dumps(flat, sort_keys=True, default=str)


def run_name(run: RunConfig) -> str:
    """``<method>[-<ratio tags>][-<partition>]-s<seed>-<hash>``, e.g.
    ``adc-xi0.1-dirichlet0.5-s0-3f2a9c1e`` (no partition with one client); the hash is
    of :func:`identity`, so the same run always gets the same name."""
    parts = [run.method.name]
    for key, tag in ratio_params(run.method.name).items():
        value = run.method.params.get(key)
        if value is not None:
            parts.append(f"{tag}{value:g}" if isinstance(value, (int, float)) else f"{tag}{value}")
    if run.federation.num_clients > 1:  # one client holds everything: no partition
        partition = run.partition.kind
        if partition == "dirichlet":
            partition += f"{run.partition.alpha:g}"
        parts.append(partition)
    digest = hashlib.sha1(identity(run).encode()).hexdigest()[:8]
    parts += [f"s{run.seed}", digest]
    return _UNSAFE.sub("_", "-".join(parts))


class RunDirectory:
    """One run's folder (layout in the module docstring); the lifecycle writes it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def create(cls, run: RunConfig, name: str | None = None) -> RunDirectory:
        root = Path(run.results_dir).expanduser().resolve()
        name = name or time.strftime("%Y%m%d-%H%M%S") + f"-{run.method.name}-s{run.seed}"
        # mkdir itself is the claim (not an exists() check first): runs started in the same
        # second, e.g. a parallel sweep, would otherwise race for one name and one crash.
        root.mkdir(parents=True, exist_ok=True)
        path, suffix = root / name, 1
        while True:
            try:
                path.mkdir()
                break
            except FileExistsError:
                path = root / f"{name}-{suffix}"
                suffix += 1
        _write_atomic(path / "config.json", json.dumps(asdict(run), indent=2, default=str))
        log.info("results directory: %s", path)
        return cls(path)

    @classmethod
    def prepare(cls, run: RunConfig, path: Path) -> tuple[RunDirectory, bool]:
        """Open ``path`` for ``run``: create it with config.json, or check the config of an
        unfinished one; the flag says whether it holds a checkpoint to resume from. Files
        of a run killed before its first checkpoint are removed, so that it starts clean."""
        directory = cls(path)
        if (path / "config.json").is_file():
            directory.check_same_config(run)
            if (path / "checkpoint.pt").is_file():
                return directory, True
            for name in PARTIAL_FILES:
                (path / name).unlink(missing_ok=True)
        path.mkdir(parents=True, exist_ok=True)
        _write_atomic(path / "config.json", json.dumps(asdict(run), indent=2, default=str))
        return directory, False

    def summary(self) -> dict | None:
        """The run's summary.json, or None while it is unfinished."""
        file = self.path / "summary.json"
        return json.loads(file.read_text()) if file.is_file() else None

    def append_round(self, row: dict[str, float]) -> None:
        with open(self.path / "metrics.jsonl", "a") as fh:
            fh.write(json.dumps(row) + "\n")

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
        saved = {**ADDED_LATER, **flatten(json.loads(saved_path.read_text()))}
        now = {**ADDED_LATER, **flatten(config_dict(run))}
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

    def finish(
        self,
        server: FederatedServer,
        history: list[dict[str, float]],
        stop_reason: str,
        data: ImageData | None = None,
    ) -> dict:
        summary = {
            "stop_reason": stop_reason,
            "rounds": len(history),
            "final_accuracy": history[-1]["test_accuracy"] if history else float("nan"),
            "final_loss": history[-1]["test_loss"] if history else float("nan"),
            "test_protocol": server.test_protocol,
            **_by_protocol(history[-1] if history else {}),
            "wall_s": history[-1]["wall_s"] if history else 0.0,
            **summarize(history),
            **server.ledger.summary(),
        }
        if data is not None:
            summary["data"] = data_record(data)
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


def _by_protocol(last: Mapping[str, float]) -> dict[str, float]:
    """``final_accuracy_uncompressed``, ``final_loss_split``, ...: the last row's test
    columns by protocol (NaN for rows written before both were recorded)."""
    keys = [k for k in METRIC_KEYS if k not in ("test_accuracy", "test_loss")]
    return {"final_" + k.removeprefix("test_"): last.get(k, float("nan")) for k in keys}
