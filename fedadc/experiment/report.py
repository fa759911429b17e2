"""``fedadc-report``: aggregate finished runs over seeds into tables and the paper's figures.

A run is any folder holding ``summary.json`` and ``config.json`` (found recursively). Runs
whose configurations differ only in the seed (and in where or how they ran: results
directory, device, threads, timeout) form one group; its accuracy is the mean and the
population std (``np.std``, as the paper's error bars) over the seeds. Groups are shown per
*setting* (model, data, partition and any other key that varies between groups), and
within a setting per *series* (method plus its non-ratio parameters).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger("fedadc.experiment")

IGNORED = ("seed", "results_dir", "device", "threads", "federation.timeout_s")
"""Config keys that do not separate groups (a seed, or where/how a run executed)."""
RATIO_PARAMS = ("xi", "ratio", "group_size", "bits", "batch_ratio", "token_ratio")
"""Method parameters that set the compression ratio (the x axis, not the series)."""
SHOWN_ELSEWHERE = ("method.", "model.name", "data.name", "data.source", "data.path")
SHOWN_ELSEWHERE += ("partition.", "federation.num_clients")

CSV_COLUMNS = [
    "model",
    "data",
    "partition",
    "other",
    "method",
    "params",
    "xi_nominal",
    "xi_realised",
    "all_in_ratio",
    "all_in_mb",
    "accuracy_mean",
    "accuracy_std",
    "n_seeds",
    "seeds",
    "stop_reasons",
    "runs",
]


@dataclass
class RunRecord:
    """One finished run as read from its directory."""

    path: Path
    config: dict
    summary: dict
    metrics: list[dict] = field(default_factory=list)

    @property
    def flat(self) -> dict[str, str]:
        return flatten(self.config)

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
            if k not in RATIO_PARAMS and v is not None
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
            "n_seeds": len(self.runs),
            "seeds": " ".join(str(s) for s in self.seeds),
            "stop_reasons": " ".join(
                sorted({str(r.summary.get("stop_reason")) for r in self.runs})
            ),
            "runs": " ".join(str(r.path) for r in self.runs),
        }


def _fmt(value: object) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def flatten(data: dict, prefix: str = "") -> dict[str, str]:
    """Dotted keys -> canonical JSON values (dicts of method params and kwargs included)."""
    flat: dict[str, str] = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = json.dumps(value, sort_keys=True)
    return flat


# ---------------------------------------------------------------- collecting


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
        flat = {k: v for k, v in record.flat.items() if k not in IGNORED}
        buckets.setdefault(json.dumps(flat, sort_keys=True), []).append(record)
    groups = [Group(_one_per_seed(runs)) for runs in buckets.values()]
    flats = [{k: v for k, v in g.runs[0].flat.items() if k not in IGNORED} for g in groups]
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


# ---------------------------------------------------------------- writing


def write_csv(groups: Sequence[Group], path: Path) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for group in groups:
            writer.writerow(group.row())


def setting_title(setting: tuple[str, str, str, str]) -> str:
    return " · ".join(part for part in setting if part)


def write_markdown(
    groups: Sequence[Group], path: Path, plots: dict[tuple[str, str, str, str], list[Path]]
) -> None:
    runs = sum(len(g.runs) for g in groups)
    lines = [
        "# fedadc results",
        "",
        f"{runs} runs in {len(groups)} groups. Final accuracy: the test accuracy at the last "
        "evaluation, mean ± std over seeds (population std, as the paper's error bars). "
        "ξ nominal: the ratio the method claims; ξ realised: activations and gradients "
        "against Base (the paper's definition); all-in: every byte (labels, indices, "
        "headers, head weights) against Base; MB: all-in bytes up + down.",
    ]
    for setting, members in by_setting(groups).items():
        lines += ["", f"## {setting_title(setting)}", ""]
        lines += [
            "| method | params | ξ nominal | ξ realised | all-in ratio | all-in MB "
            "| final accuracy | seeds |",
            "|---|---|---:|---:|---:|---:|---:|---:|",
        ]
        for g in members:
            row = g.row()
            lines.append(
                f"| {g.series} | {g.params_label or '-'} | {row['xi_nominal']:.4g} "
                f"| {row['xi_realised']:.4g} | {row['all_in_ratio']:.4g} "
                f"| {row['all_in_mb']:.4g} | {g.accuracy_mean:.4f} ± {g.accuracy_std:.4f} "
                f"| {len(g.runs)} |"
            )
        for plot in plots.get(setting, []):
            lines += ["", f"![{plot.stem}]({plot.name})"]
    path.write_text("\n".join(lines) + "\n")


def make_plots(
    groups: Sequence[Group], out: Path, curve_xi: float
) -> dict[tuple[str, str, str, str], list[Path]]:
    """The three figures per setting; file names carry a slug when there are several."""
    from fedadc.experiment import plots

    settings = by_setting(groups)
    made: dict[tuple[str, str, str, str], list[Path]] = {}
    for setting, members in settings.items():
        suffix = "" if len(settings) == 1 else "-" + _slug(setting_title(setting))
        title = setting_title(setting)
        files = [
            plots.accuracy_vs_xi(members, out / f"accuracy_vs_xi{suffix}.png", title),
            plots.accuracy_vs_communication(
                members, curve_xi, out / f"accuracy_vs_communication{suffix}.png", title
            ),
            plots.balance_heatmap(members, out / f"balance_heatmap{suffix}.png", title),
        ]
        made[setting] = [f for f in files if f is not None]
    return made


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "_", text).strip("_")[:80]


def report(paths: Sequence[Path], out: Path, curve_xi: float = 0.1) -> list[Group]:
    """Collect, group and write results.csv, results.md and the plots into ``out``."""
    groups = group_runs(find_runs(paths))
    out.mkdir(parents=True, exist_ok=True)
    write_csv(groups, out / "results.csv")
    plots = make_plots(groups, out, curve_xi) if groups else {}
    write_markdown(groups, out / "results.md", plots)
    return groups


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="fedadc-report",
        description="Aggregate fedadc run directories over seeds: results.csv, results.md, "
        "accuracy vs xi, accuracy vs communication, and the T/B x k/n heatmap.",
    )
    parser.add_argument("paths", nargs="+", type=Path, help="run directories or their roots")
    parser.add_argument("--out", type=Path, help="output folder (default: the first path)")
    parser.add_argument(
        "--curve-xi",
        type=float,
        default=0.1,
        help="xi of the runs shown in accuracy vs communication (default 0.1; the paper's "
        "fig. 4 uses runs with xi in [0.1, 0.15])",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    out = (args.out or args.paths[0]).expanduser().resolve()
    groups = report(args.paths, out, args.curve_xi)
    if not groups:
        print(f"no finished runs (summary.json + config.json) under {args.paths}", file=sys.stderr)
        return 1
    runs = sum(len(g.runs) for g in groups)
    print(f"{runs} runs in {len(groups)} groups -> {out / 'results.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
