"""Flower's flat run config -> fedadc's typed RunConfig (composed by Hydra, cached).

The Flower app's run config is flat and typed (bool/int/float/str, no lists);
:func:`overrides_from_flower` maps it onto Hydra overrides of ``conf/config.yaml``, so
``flwr run`` and the in-process trainer compose exactly the same configuration. These key
names are Flower's (pyproject's ``[tool.flwr.app.config]``); ``fedadc`` never sees them.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from typing import TYPE_CHECKING

from fedadc.config import compose
from fedadc.config.compose import hydra_value
from fedadc.config.folder import group_options
from fedadc.config.schema import RunConfig

if TYPE_CHECKING:
    from flwr.app import Context

FLOWER_KEYS: dict[str, str] = {
    # group selections (applied before any value override)
    "method": "method",
    "model": "model",
    "data": "data",
    "partition": "partition",
    "mode": "federation",
    # values
    "xi": "xi",
    "alpha": "partition.alpha",
    "num-clients": "federation.num_clients",
    "rounds": "federation.rounds",
    "local-steps": "federation.local_steps",
    "steps-per-message": "federation.steps_per_message",
    "batch-size": "federation.batch_size",
    "budget-epochs": "federation.budget_epochs",
    "split-at": "model.split_at",
    "lr": "optim.lr",
    "seed": "seed",
    "results-dir": "results_dir",
    # a free string of space-separated Hydra overrides, appended last (no single Hydra key)
    "overrides": "",
}
"""Flower run-config key -> Hydra key (a group name for group selections). pyproject's
``[tool.flwr.app.config]`` declares exactly these plus :data:`FLOWER_INTERNAL_KEYS`."""

FLOWER_GROUP_KEYS = frozenset({"method", "model", "data", "partition", "mode"})
"""Flower keys that select an option of a Hydra config group."""

FLOWER_NULL_IF_NOT_POSITIVE = frozenset({"budget-epochs", "lr"})
"""Flower keys where a value <= 0 means null (no budget, automatic lr): TOML has no null."""

FLOWER_STR_KEYS = FLOWER_GROUP_KEYS | {"results-dir", "overrides"}
"""Flower keys whose value must be a string; all other mapped keys must be numbers."""
FLOWER_INTERNAL_KEYS = frozenset({"resume", "fast-sim", "fast-deploy", "poll-s"})
"""Run-config keys the Flower app reads itself (not Hydra config): ignored here. Together
with :data:`FLOWER_KEYS` they are pyproject's ``[tool.flwr.app.config]``."""

_GROUP_OPTION = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-/]*$")
_CACHE: dict[tuple, RunConfig] = {}


def overrides_from_flower(run_config: Mapping[str, bool | int | float | str]) -> list[str]:
    """Hydra overrides for the Flower app's flat run config (see :data:`FLOWER_KEYS`).

    Group selections come first, then value overrides, then the free ``overrides`` string.
    ``budget-epochs``/``lr`` <= 0 mean null. :data:`FLOWER_INTERNAL_KEYS` are skipped; other
    unknown keys raise ``ValueError``.
    """
    unknown = sorted(set(run_config) - set(FLOWER_KEYS) - FLOWER_INTERNAL_KEYS)
    if unknown:
        raise ValueError(
            f"unknown Flower run-config key(s) {unknown}; valid: "
            f"{sorted(set(FLOWER_KEYS) | FLOWER_INTERNAL_KEYS)}"
        )
    groups: list[str] = []
    values: list[str] = []
    extra: list[str] = []
    for flower_key, hydra_key in FLOWER_KEYS.items():
        if flower_key not in run_config:
            continue
        value = run_config[flower_key]
        if flower_key in FLOWER_STR_KEYS and not isinstance(value, str):
            raise ValueError(f"Flower run-config {flower_key!r} must be a string, got {value!r}")
        if flower_key == "overrides":
            extra = shlex.split(value)  # type: ignore[arg-type]
        elif flower_key in FLOWER_GROUP_KEYS:
            groups.append(_group_choice(flower_key, hydra_key, value))  # type: ignore[arg-type]
        else:
            if flower_key not in FLOWER_STR_KEYS and (
                isinstance(value, bool) or not isinstance(value, (int, float))
            ):
                raise ValueError(
                    f"Flower run-config {flower_key!r} must be a number, got {value!r}"
                )
            if flower_key in FLOWER_NULL_IF_NOT_POSITIVE and value <= 0:
                value = None  # type: ignore[assignment]
            values.append(f"{hydra_key}={hydra_value(value)}")
    return groups + values + extra


def _group_choice(flower_key: str, group: str, value: str) -> str:
    if not _GROUP_OPTION.match(value):
        raise ValueError(f"Flower run-config {flower_key!r}: bad option name {value!r}")
    if value not in group_options(group):
        raise ValueError(
            f"Flower run-config {flower_key!r} has no choice {value!r}; valid choices: "
            f"{group_options(group)}"
        )
    return f"{group}={value}"


def run_config(context: Context) -> RunConfig:
    """Compose once per process and run config (clients see one message per step).

    Keys the apps read themselves (``FLOWER_INTERNAL_KEYS``: resume, fast-sim, fast-deploy,
    poll-s) are left out of the composition.
    """
    key = tuple(sorted(context.run_config.items()))
    if key not in _CACHE:
        flat = {k: v for k, v in context.run_config.items() if k not in FLOWER_INTERNAL_KEYS}
        _CACHE[key] = compose(overrides_from_flower(flat))
    return _CACHE[key]
