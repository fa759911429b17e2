"""The paper's figures from grouped runs (matplotlib, Agg: works without a display).

* accuracy vs nominal xi per method, error bars = std over seeds (paper fig. 3);
* test accuracy vs cumulative communication for the runs nearest one xi (paper fig. 4);
* final accuracy over explicit ADC T/B x k/n, with iso-xi contours (paper fig. 2);
* seconds per step by component (client / server / transport wait), from metrics.jsonl.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fedadc.federated.timing import summarize

if TYPE_CHECKING:
    from fedadc.experiment.groups import Group

BASE = "identity"
CURVE_WINDOW = 1.6
"""Fig. 4 takes, per series, the group whose xi is within this factor of the target."""
ISO_XI = (0.01, 0.05, 0.1, 0.25, 0.5)


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _series(groups: Sequence[Group]) -> dict[str, list[Group]]:
    out: dict[str, list[Group]] = {}
    for group in groups:
        out.setdefault(group.series, []).append(group)
    return out


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    _plt().close(fig)
    return path


def _xi_ticks(ax: Any, values: list[float]) -> None:
    """Label the swept xi values themselves: a log axis over 0.01-0.5 has two decades."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    ticks = sorted({float(f"{v:.3g}") for v in values if v > 0})
    if 1 < len(ticks) <= 12:
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
        ax.tick_params(axis="x", labelrotation=45)


def accuracy_vs_xi(groups: Sequence[Group], path: Path, title: str) -> Path:
    """Final accuracy against nominal xi, one line per series; Base as a band."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    xs: list[float] = []
    for name, members in _series(groups).items():
        if name == BASE:
            g = members[0]
            ax.axhline(g.accuracy_mean, color="black", ls="--", label=f"{BASE} (Base, ξ = 1)")
            low, high = g.accuracy_mean - g.accuracy_std, g.accuracy_mean + g.accuracy_std
            ax.axhspan(low, high, color="black", alpha=0.08)
            continue
        members = sorted(members, key=lambda g: g.mean("nominal_xi"))
        x = [g.mean("nominal_xi") for g in members]
        xs += x
        linestyle = "none" if members[0].explicit_balance else "-"
        bars = ax.errorbar(
            x,
            [g.accuracy_mean for g in members],
            yerr=[g.accuracy_std for g in members],
            marker="o",
            ms=4,
            capsize=3,
            ls=linestyle,
            label=f"{name} ({members[0].protocol or 'headline'})",
        )
        other = members[0].other_protocol  # the second protocol, dashed, same colour
        values = [g.protocol_accuracy(other) for g in members] if other else []
        if values and all(math.isfinite(mean) for mean, _ in values):
            ax.errorbar(
                x,
                [mean for mean, _ in values],
                yerr=[std for _, std in values],
                marker="s",
                ms=3,
                capsize=2,
                ls="none" if linestyle == "none" else "--",
                color=bars.lines[0].get_color(),
                label=f"{name} ({other})",
            )
    if xs:
        ax.set_xscale("log")
        _xi_ticks(ax, xs)
    ax.set_xlabel("nominal compression ratio ξ (log scale)")
    ax.set_ylabel("final test accuracy (mean ± std over seeds)")
    ax.set_title(f"Accuracy vs ξ — {title}", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="best")
    return _save(fig, path)


def _nearest(members: Sequence[Group], target: float) -> Group | None:
    best = min(members, key=lambda g: abs(math.log(max(g.mean("nominal_xi"), 1e-12) / target)))
    ratio = best.mean("nominal_xi") / target
    return best if 1 / CURVE_WINDOW <= ratio <= CURVE_WINDOW else None


def _curve(
    group: Group, key: str = "test_accuracy"
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Mean cumulative MB, mean and std of ``key`` per evaluated round, over seeds (None
    when no run recorded it: runs from before both protocols were recorded)."""
    per_seed = []
    for run in group.runs:
        rows = [r for r in run.metrics if key in r and r[key] == r[key]]
        if rows:
            per_seed.append(rows)
    if not per_seed:
        return None
    length = min(len(rows) for rows in per_seed)
    mb = np.array([[(r["bytes_up"] + r["bytes_down"]) / 1e6 for r in s[:length]] for s in per_seed])
    acc = np.array([[r[key] for r in s[:length]] for s in per_seed])
    return mb.mean(axis=0), acc.mean(axis=0), acc.std(axis=0)


def accuracy_vs_communication(
    groups: Sequence[Group], target_xi: float, path: Path, title: str
) -> Path | None:
    """Test accuracy against cumulative all-in MB for Base and, per series, the group
    nearest ``target_xi``; None when no run has per-round metrics."""
    chosen = []
    for name, members in _series(groups).items():
        group = members[0] if name == BASE else _nearest(members, target_xi)
        if group is not None and not group.explicit_balance:
            chosen.append((name, group, _curve(group)))
    chosen = [c for c in chosen if c[2] is not None]
    if not chosen:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ends = []
    for name, group, curve in chosen:
        mb, mean, std = curve  # type: ignore[misc]
        label = name if name == BASE else f"{name} (ξ = {group.mean('nominal_xi'):.3g})"
        style = {"color": "black", "ls": "--"} if name == BASE else {}
        (line,) = ax.plot(mb, mean, marker=".", label=f"{label}, {group.protocol}", **style)
        ax.fill_between(mb, mean - std, mean + std, color=line.get_color(), alpha=0.15)
        ends.append(mb[-1])
        other = group.other_protocol  # the second protocol, dotted, same colour
        second = _curve(group, f"test_accuracy_{other}") if other and name != BASE else None
        if second is not None:
            ax.plot(second[0], second[1], ls=":", color=line.get_color(), label=f"{label}, {other}")
    if min(ends) > 0 and max(ends) / min(ends) > 20:
        ax.set_xscale("log")
    ax.set_xlabel("cumulative communication, MB up + down (all bytes)")
    ax.set_ylabel("test accuracy (mean ± std over seeds)")
    ax.set_title(f"Accuracy vs communication, ξ ≈ {target_xi:g} — {title}", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="best")
    return _save(fig, path)


def balance_heatmap(groups: Sequence[Group], path: Path, title: str) -> Path | None:
    """Final accuracy over T/B (rows) x k/n (columns) of ADC runs with explicit ratios;
    None when there are none. Dashed lines: iso-xi = (T/B)(k/n)."""
    cells = [g for g in groups if g.explicit_balance]
    if not cells:
        return None
    series = _series(cells)
    name, members = max(series.items(), key=lambda item: len(item[1]))  # the largest grid
    rows = sorted({float(g.params["batch_ratio"]) for g in members})
    cols = sorted({float(g.params["token_ratio"]) for g in members})
    acc = np.full((len(rows), len(cols)), np.nan)
    std = np.full_like(acc, np.nan)
    for g in members:
        i, j = (
            rows.index(float(g.params["batch_ratio"])),
            cols.index(float(g.params["token_ratio"])),
        )
        acc[i, j], std[i, j] = g.accuracy_mean, g.accuracy_std
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 5.2))
    image = ax.imshow(np.ma.masked_invalid(acc), origin="lower", cmap="viridis", aspect="auto")
    fig.colorbar(image, ax=ax, label="final test accuracy (mean over seeds)")
    finite = acc[np.isfinite(acc)]
    middle = (finite.min() + finite.max()) / 2 if finite.size else 0.0
    for i in range(len(rows)):
        for j in range(len(cols)):
            if np.isfinite(acc[i, j]):
                color = "black" if acc[i, j] > middle else "white"
                text = f"{acc[i, j]:.3f}\n±{std[i, j]:.3f}"
                ax.text(j, i, text, ha="center", va="center", fontsize=7, color=color)
    if len(rows) > 1 and len(cols) > 1:
        fine_i, fine_j = np.linspace(0, len(rows) - 1, 100), np.linspace(0, len(cols) - 1, 100)
        xi = np.outer(
            np.interp(fine_i, range(len(rows)), rows), np.interp(fine_j, range(len(cols)), cols)
        )
        levels = [v for v in ISO_XI if xi.min() < v < xi.max()]
        if levels:
            contour = ax.contour(fine_j, fine_i, xi, levels=levels, colors="white", linestyles="--")
            ax.clabel(contour, fmt=lambda v: f"ξ={v:g}", fontsize=7)
    ax.set_xticks(range(len(cols)), [f"{c:g}" for c in cols])
    ax.set_yticks(range(len(rows)), [f"{r:g}" for r in rows])
    ax.set_xlabel("k/n (tokens kept per merged sample)")
    ax.set_ylabel("T/B (merged samples per batch)")
    ax.set_title(f"ADC balance ({name}) — {title}", fontsize=9)
    return _save(fig, path)


TIME_PARTS = (("step_client_s", "client compute"), ("step_server_s", "server compute"))
TIME_PARTS += (("step_wait_s", "transport wait"),)


def _step_times(group: Group) -> dict[str, float] | None:
    """Mean over seeds of each run's per-step seconds (from its metrics rows); None when
    no run recorded timing (runs from before it existed)."""
    runs = [summarize(run.metrics) for run in group.runs]
    runs = [r for r in runs if r["steps"]]
    if not runs:
        return None
    return {key: float(np.mean([r[key] for r in runs])) for key, _ in TIME_PARTS}


def time_per_step(groups: Sequence[Group], path: Path, title: str) -> Path | None:
    """Seconds per step split into client compute, server compute and transport wait, one
    stacked bar per group; None when no run has timing in its metrics."""
    bars = [(g, t) for g in groups if (t := _step_times(g)) is not None]
    if not bars:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 1.2 + 0.4 * len(bars)))
    labels = [f"{g.series} {g.params_label}".strip() for g, _ in bars]
    left = np.zeros(len(bars))
    for key, name in TIME_PARTS:
        widths = np.array([t[key] for _, t in bars])
        ax.barh(labels, widths, left=left, label=name)
        left += widths
    ax.invert_yaxis()
    ax.set_xlabel("seconds per step (mean over seeds)")
    ax.set_title(f"Time per step by component — {title}", fontsize=9)
    ax.grid(alpha=0.3, axis="x")
    ax.legend(fontsize=8, loc="best")
    return _save(fig, path)
