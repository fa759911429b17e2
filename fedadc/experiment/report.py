"""``fedadc-report``: aggregate finished runs over seeds into tables and the paper's figures.

Which runs form a group and how it is labelled: :mod:`fedadc.experiment.groups`.
"""

from __future__ import annotations

import argparse
import csv
import logging
import math
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from fedadc.experiment import plots
from fedadc.experiment.groups import Group, by_setting, find_runs, group_runs

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
    "protocol",
    "accuracy_uncompressed_mean",
    "accuracy_uncompressed_std",
    "accuracy_split_mean",
    "accuracy_split_std",
    "n_seeds",
    "seeds",
    "stop_reasons",
    "runs",
]


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
        "evaluation, mean ± std over seeds (population std, as the paper's error bars), "
        "by the method's headline protocol: *unc* (head + tail uncompressed, the paper's) "
        "or *split* (through the compressor's inference round trip); the other protocol "
        "has its own column (- where the runs did not record it). "
        "ξ nominal: the ratio the method claims; ξ realised: activations and gradients "
        "against Base (the paper's definition); all-in: every byte (labels, indices, "
        "headers, head weights) against Base; MB: all-in bytes up + down.",
    ]
    for setting, members in by_setting(groups).items():
        lines += ["", f"## {setting_title(setting)}", ""]
        lines += [
            "| method | params | ξ nominal | ξ realised | all-in ratio | all-in MB "
            "| final accuracy | other protocol | seeds |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for g in members:
            row = g.row()
            lines.append(
                f"| {g.series} | {g.params_label or '-'} | {row['xi_nominal']:.4g} "
                f"| {row['xi_realised']:.4g} | {row['all_in_ratio']:.4g} "
                f"| {row['all_in_mb']:.4g} | {_headline(g)} "
                f"| {_other(g)} | {len(g.runs)} |"
            )
        for plot in plots.get(setting, []):
            lines += ["", f"![{plot.stem}]({plot.name})"]
    path.write_text("\n".join(lines) + "\n")


SHORT = {"uncompressed": "unc", "split": "split"}


def _headline(group: Group) -> str:
    """The final accuracy, ``mean ± std (protocol)`` over seeds."""
    text = f"{group.accuracy_mean:.4f} ± {group.accuracy_std:.4f}"
    return f"{text} ({SHORT[group.protocol]})" if group.protocol else text


def _other(group: Group) -> str:
    """The other protocol's final accuracy; ``-`` where the runs did not record it."""
    other = group.other_protocol
    mean, std = group.protocol_accuracy(other) if other else (math.nan, math.nan)
    return "-" if math.isnan(mean) else f"{mean:.4f} ± {std:.4f} ({SHORT[other]})"


def make_plots(
    groups: Sequence[Group], out: Path, curve_xi: float
) -> dict[tuple[str, str, str, str], list[Path]]:
    """The figures per setting; file names carry a slug when there are several."""
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
            plots.time_per_step(members, out / f"time_per_step{suffix}.png", title),
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
        "accuracy vs xi, accuracy vs communication, the T/B x k/n heatmap and time per step "
        "by component (client / server / wait).",
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
