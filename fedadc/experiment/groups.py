"""Finished runs read back and grouped over seeds (what ``fedadc-report`` tabulates and plots).

A run is any folder holding ``summary.json`` and ``config.json`` (found recursively). Runs
with the same :func:`fedadc.federated.results.identity` up to the seed form one group; its
accuracy is the mean and the population std (``np.std``, as the paper's error bars) over
the seeds. Groups are shown per *setting* (model, data, partition and any other key that
varies between groups), and within a setting per *series* (method plus its non-ratio
parameters; a method names its ratio parameters itself, ``Compressor.ratio_params``).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fedadc.compression.registry import ratio_params
from fedadc.federated.results import ADDED_LATER, RESULT_NEUTRAL, flatten, identity

log = logging.getLogger("fedadc.experiment")

SHOWN_ELSEWHERE = ("method.", "model.name", "data.name", "data.source", "data.path")
SHOWN_ELSEWHERE += ("partition.", "federation.num_clients")


@dataclass
class RunRecord:
    """One finished run as read from its directory."""

    path: Path
    config: dict
    summary: dict
    metrics: list[dict] = field(default_factory=list)

    @property
    def flat(self) -> dict[str, str]:
        """Dotted keys -> canonical JSON values, without seed and result-neutral keys."""
        return {
            k: json.dumps(v, sort_keys=True)
            for k, v in {**ADDED_LATER, **flatten(self.config)}.items()
            if k not in RESULT_NEUTRAL and k != "seed"
        }

    def value(self, key: str) -> float:
        number = self.summary.get(key)
        return float(number) if isinstance(number, (int, float)) else math.nan


@dataclass
class Group:
    """Runs identical up to the seed, with the labels the tables and plots use."""

    runs: list[RunRecord]
    other: str = ""

    @property
    def config(self) -> dict:
        return self.runs[0].config

    @property
    def method(self) -> str:
        return str(self.config["method"]["name"])

    @property
    def params(self) -> dict:
        return dict(self.config["method"].get("params") or {})

    @property
    def params_label(self) -> str:
        return " ".join(f"{k}={_fmt(v)}" for k, v in sorted(self.params.items()))

    @property
    def explicit_balance(self) -> bool:
        """ADC with explicit T/B and k/n (the balance grid)."""
        params = self.params
        return params.get("batch_ratio") is not None and params.get("token_ratio") is not None

    @property
    def series(self) -> str:
        extra = [
            f"{k}={_fmt(v)}"
            for k, v in sorted(self.params.items())
            if k not in ratio_params(self.method) and v is not None
        ]
        if self.explicit_balance:
            extra.append("T/B x k/n")
        return " ".join([self.method, *extra])

    @property
    def setting(self) -> tuple[str, str, str, str]:
        return (self.model, self.data, self.partition, self.other)

    @property
    def model(self) -> str:
        model = self.config["model"]
        scratch = not model.get("pretrained") and not model.get("checkpoint_path")
        return str(model["name"]) + (" (from scratch)" if scratch else "")

    @property
    def data(self) -> str:
        data = self.config["data"]
        return str(
            data.get("name") or (data.get("path") and Path(data["path"]).name) or data["source"]
        )

    @property
    def partition(self) -> str:
        clients = int(self.config["federation"]["num_clients"])
        if clients == 1:
            return "1 client"
        part = self.config["partition"]
        kind = str(part["kind"])
        if kind == "dirichlet":
            kind += f"({_fmt(part['alpha'])})"
        elif kind == "pathological":
            kind += f"({part['classes_per_client']} classes)"
        return f"{kind}, {clients} clients"

    def mean(self, key: str) -> float:
        return float(np.mean([r.value(key) for r in self.runs]))

    @property
    def accuracies(self) -> list[float]:
        return [r.value("final_accuracy") for r in self.runs]

    @property
    def accuracy_mean(self) -> float:
        return float(np.mean(self.accuracies))

    @property
    def accuracy_std(self) -> float:
        return float(np.std(self.accuracies))  # population std, as the paper's error bars

    @property
    def protocol(self) -> str:
        """Which protocol ``final_accuracy`` is (``uncompressed`` or ``split``; runs
        recorded before both protocols existed: the method's default, unknown here)."""
        protocols = {str(r.summary.get("test_protocol", "")) for r in self.runs}
        return protocols.pop() if len(protocols) == 1 else ""

    @property
    def other_protocol(self) -> str:
        return {"uncompressed": "split", "split": "uncompressed"}.get(self.protocol, "")

    def protocol_accuracy(self, protocol: str) -> tuple[float, float]:
        """Mean and population std over seeds of the final accuracy by ``protocol``
        (NaN for runs that did not record it)."""
        values = [r.value(f"final_accuracy_{protocol}") for r in self.runs]
        return float(np.mean(values)), float(np.std(values))

    @property
    def all_in_mb(self) -> float:
        return float(np.mean([r.value("bytes_up") + r.value("bytes_down") for r in self.runs]))

    @property
    def seeds(self) -> list[int]:
        return sorted(int(r.config.get("seed", -1)) for r in self.runs)

    def row(self) -> dict[str, object]:
        return {
            "model": self.model,
            "data": self.data,
            "partition": self.partition,
            "other": self.other,
            "method": self.method,
            "params": self.params_label,
            "xi_nominal": self.mean("nominal_xi"),
            "xi_realised": self.mean("realised_xi"),
            "all_in_ratio": self.mean("all_in_ratio"),
            "all_in_mb": self.all_in_mb / 1e6,
            "accuracy_mean": self.accuracy_mean,
            "accuracy_std": self.accuracy_std,
            "protocol": self.protocol,
            "accuracy_uncompressed_mean": self.protocol_accuracy("uncompressed")[0],
            "accuracy_uncompressed_std": self.protocol_accuracy("uncompressed")[1],
            "accuracy_split_mean": self.protocol_accuracy("split")[0],
            "accuracy_split_std": self.protocol_accuracy("split")[1],
            "n_seeds": len(self.runs),
            "seeds": " ".join(str(s) for s in self.seeds),
            "stop_reasons": " ".join(
                sorted({str(r.summary.get("stop_reason")) for r in self.runs})
            ),
            "runs": " ".join(str(r.path) for r in self.runs),
        }


def _fmt(value: object) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def find_runs(paths: Iterable[Path]) -> list[RunRecord]:
    """Every run directory at or under ``paths`` (summary.json + config.json), once each."""
    seen: dict[Path, RunRecord] = {}
    for root in paths:
        root = Path(root).expanduser().resolve()
        candidates = [root] if (root / "summary.json").is_file() else []
        candidates += [p.parent for p in sorted(root.rglob("summary.json"))]
        for path in candidates:
            if path in seen or not (path / "config.json").is_file():
                continue
            try:
                seen[path] = _read(path)
            except (OSError, ValueError) as err:
                log.warning("skipping %s: %s", path, err)
    return list(seen.values())


def _read(path: Path) -> RunRecord:
    config = json.loads((path / "config.json").read_text())
    summary = json.loads((path / "summary.json").read_text())
    metrics = []
    if (path / "metrics.jsonl").is_file():
        lines = (path / "metrics.jsonl").read_text().splitlines()
        metrics = [json.loads(line) for line in lines if line.strip()]
    return RunRecord(path, config, summary, metrics)


def group_runs(records: Sequence[RunRecord]) -> list[Group]:
    """Group over seeds; label each group with the keys that vary between groups."""
    buckets: dict[str, list[RunRecord]] = {}
    for record in records:
        buckets.setdefault(identity(record.config, ignore=("seed",)), []).append(record)
    groups = [Group(_one_per_seed(runs)) for runs in buckets.values()]
    flats = [g.runs[0].flat for g in groups]
    keys = sorted({k for flat in flats for k in flat})
    varying = [
        k
        for k in keys
        if len({flat.get(k) for flat in flats}) > 1 and not k.startswith(SHOWN_ELSEWHERE)
    ]
    for group, flat in zip(groups, flats, strict=True):
        group.other = " ".join(f"{k}={_plain(flat.get(k))}" for k in varying)
    groups.sort(key=lambda g: (g.setting, g.series, g.mean("nominal_xi"), g.params_label))
    return groups


def _one_per_seed(runs: list[RunRecord]) -> list[RunRecord]:
    """A group averages over seeds: a second run of the same seed (e.g. the same config
    once in-process and once with Flower) is a replicate, not a seed; keep the first."""
    kept: dict[object, RunRecord] = {}
    for run in sorted(runs, key=lambda r: str(r.path)):
        seed = run.config.get("seed")
        if seed in kept:
            log.warning("%s repeats seed %s of %s: left out", run.path, seed, kept[seed].path)
        else:
            kept[seed] = run
    return sorted(kept.values(), key=lambda r: r.config.get("seed", 0))


def _plain(value: str | None) -> str:
    if value is None:
        return "-"
    loaded = json.loads(value)
    return _fmt(loaded) if not isinstance(loaded, str) else loaded


def by_setting(groups: Sequence[Group]) -> dict[tuple[str, str, str, str], list[Group]]:
    settings: dict[tuple[str, str, str, str], list[Group]] = {}
    for group in groups:
        settings.setdefault(group.setting, []).append(group)
    return settings
