"""Turn an experiment file plus command-line overrides into the list of runs to do.

An experiment is ``conf/experiment/<name>.yaml`` (or any YAML path) holding::

    fixed:            # overrides applied to every run (a list of strings or a mapping)
      - federation.rounds=10
    sweep:            # key -> values, cartesian product; a list of such mappings is the
      method: [adc]   # union of their products (e.g. one xi grid per method)
      xi: [0.05, 0.1]

Command-line overrides come last: ``key=v`` replaces that key everywhere (a sweep axis
included), ``key=v1,v2`` (Hydra's sweep syntax, also ``range(...)``) becomes an axis of
every product. Runs with the same identity (:func:`fedadc.federated.results.identity`) are
done once (Base ignores xi), so a sweep never trains the same configuration twice.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import HydraException

from fedadc.config import RunConfig, compose, conf_dir
from fedadc.config.compose import hydra_value
from fedadc.federated.results import identity

EXPERIMENT_KEY = "experiment"

_SIMPLE = re.compile(r"^[A-Za-z0-9_./:+\-]+$")
_KEYWORDS = {"null", "true", "false", "nan", "inf", "-inf"}


@dataclass(frozen=True)
class Experiment:
    """A parsed experiment file: fixed overrides and the sweep blocks (axes of values)."""

    name: str
    fixed: tuple[str, ...] = ()
    blocks: tuple[tuple[tuple[str, tuple[str, ...]], ...], ...] = ((),)
    description: str = ""


@dataclass(frozen=True)
class PlannedRun:
    """One run of a sweep: the overrides that produce it and their resolved config."""

    overrides: tuple[str, ...]
    run: RunConfig

    @property
    def identity(self) -> str:
        return identity(self.run)


def format_value(value: Any) -> str:
    """``value`` in Hydra's override grammar (strings quoted only when they must be)."""
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{k}:{format_value(v)}" for k, v in value.items()) + "}"
    if value is None or isinstance(value, (bool, int, float)):
        return hydra_value(value)
    text = str(value)
    if _SIMPLE.match(text) and text.lower() not in _KEYWORDS:
        return text
    return hydra_value(text)


def _parse(overrides: Sequence[str]) -> list[Override]:
    try:
        return OverridesParser.create().parse_overrides(list(overrides))
    except HydraException as e:
        raise ValueError(f"invalid override: {e}") from e


def _slot(override: Override) -> str:
    """The key two overrides compete for (``+x=1`` and ``~x`` both set ``x``)."""
    return override.key_or_group + (f"@{override.package}" if override.package else "")


def experiment_path(name: str) -> Path:
    """``conf/experiment/<name>.yaml``, or ``name`` itself if it is a YAML file path."""
    candidate = Path(name).expanduser()
    if candidate.suffix in (".yaml", ".yml") and candidate.is_file():
        return candidate.resolve()
    path = conf_dir() / "experiment" / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in (conf_dir() / "experiment").glob("*.yaml"))
        raise ValueError(f"no experiment {name!r}; known: {known} (or give a .yaml path)")
    return path


def load_experiment(name: str) -> Experiment:
    """Parse an experiment file (see the module docstring for the format)."""
    path = experiment_path(name)
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: an experiment file must be a mapping")
    unknown = sorted(set(data) - {"fixed", "sweep", "description"})
    if unknown:
        raise ValueError(f"{path}: unknown keys {unknown}; valid: description, fixed, sweep")
    fixed = data.get("fixed") or []
    if isinstance(fixed, Mapping):
        fixed = [f"{k}={format_value(v)}" for k, v in fixed.items()]
    if not isinstance(fixed, list) or not all(isinstance(f, str) for f in fixed):
        raise ValueError(f"{path}: 'fixed' must be a list of override strings or a mapping")
    sweep = data.get("sweep") or {}
    raw_blocks = sweep if isinstance(sweep, list) else [sweep]
    blocks = []
    for block in raw_blocks:
        if not isinstance(block, Mapping):
            raise ValueError(f"{path}: each sweep block must be a mapping key -> values")
        axes = []
        for key, values in block.items():
            values = values if isinstance(values, list) else [values]
            if not values:
                raise ValueError(f"{path}: sweep axis {key!r} has no values")
            axes.append((str(key), tuple(format_value(v) for v in values)))
        blocks.append(tuple(axes))
    return Experiment(
        name=path.stem,
        fixed=tuple(fixed),
        blocks=tuple(blocks) or ((),),
        description=str(data.get("description") or ""),
    )


def split_experiment(overrides: Sequence[str]) -> tuple[str | None, list[str]]:
    """Separate ``experiment=<name>`` from the Hydra overrides."""
    name, rest = None, []
    for text in overrides:
        if text.startswith(f"{EXPERIMENT_KEY}="):
            name = text.split("=", 1)[1]
        else:
            rest.append(text)
    return name, rest


def has_sweep(overrides: Sequence[str]) -> bool:
    """Whether any override is a Hydra sweep (``a=1,2``, ``range(...)``)."""
    return any(o.is_sweep_override() for o in _parse(overrides))


def expand(experiment: Experiment | None, cli_overrides: Sequence[str] = ()) -> list[list[str]]:
    """All override lists of the sweep, in order, before de-duplication."""
    experiment = experiment or Experiment(name="adhoc")
    cli_fixed: dict[str, str] = {}
    cli_axes: list[tuple[str, list[str]]] = []
    for override in _parse(cli_overrides):
        if override.is_sweep_override():
            key = override.get_key_element()
            values = [f"{key}={format_value(v)}" for v in override.sweep_iterator()]
            cli_axes.append((_slot(override), values))
        else:
            cli_fixed[_slot(override)] = override.input_line
    replaced = set(cli_fixed) | {slot for slot, _ in cli_axes}
    fixed = {_slot(o): o.input_line for o in _parse(experiment.fixed)}
    runs: list[list[str]] = []
    for block in experiment.blocks:
        axes = [
            (slot, values)
            for slot, values in _block_axes(block)
            if slot not in replaced  # the command line wins over the file
        ] + cli_axes
        for combo in itertools.product(*(values for _, values in axes)):
            chosen = {**fixed}
            for (slot, _), text in zip(axes, combo, strict=True):
                chosen.pop(slot, None)
                chosen[slot] = text
            for slot, text in cli_fixed.items():
                chosen.pop(slot, None)
                chosen[slot] = text
            runs.append(list(chosen.values()))
    return runs


def _block_axes(block: Iterable[tuple[str, tuple[str, ...]]]) -> list[tuple[str, list[str]]]:
    axes = []
    for key, values in block:
        texts = [f"{key}={v}" for v in values]
        parsed = _parse(texts)
        if any(o.is_sweep_override() for o in parsed):
            raise ValueError(f"sweep axis {key!r}: give a YAML list, not a comma list")
        axes.append((_slot(parsed[0]), texts))
    return axes


def plan(
    experiment: Experiment | None, cli_overrides: Sequence[str] = ()
) -> tuple[list[PlannedRun], int]:
    """Compose every expanded run and drop repeats; returns (runs, duplicates dropped).

    Composing them all first means a typo fails before the first run starts.
    """
    expanded = expand(experiment, cli_overrides)
    runs: list[PlannedRun] = []
    seen: set[str] = set()
    for overrides in expanded:
        try:
            run = compose(overrides)
        except ValueError as e:
            raise ValueError(f"run {' '.join(overrides)}: {e}") from e
        planned = PlannedRun(tuple(overrides), run)
        if planned.identity not in seen:
            seen.add(planned.identity)
            runs.append(planned)
    return runs, len(expanded) - len(runs)
