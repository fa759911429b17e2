"""Compose the Hydra config groups of ``conf/`` into a typed :class:`RunConfig`.

Hydra does what it is good at (groups, defaults, overrides, interpolation); the frozen
dataclasses of :mod:`fedadc.config.schema` are the single authority on which keys exist and
what their values may be: :mod:`fedadc.config.overrides` checks each override's key against
them before Hydra runs, :mod:`fedadc.config.typed` types the composed result with OmegaConf's
structured configs and :mod:`fedadc.config.validate` checks the choices that need timm,
torch or the compressor registry.

The Flower app's run config is flat and typed (bool/int/float/str, no lists);
:func:`overrides_from_flower` maps it onto the same Hydra overrides, so ``flwr run`` and the
in-process trainer compose exactly the same configuration.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import hydra
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException
from hydra.version import VersionBase
from omegaconf.errors import OmegaConfBaseException

from fedadc.config.folder import conf_dir, group_options
from fedadc.config.overrides import prepare_overrides
from fedadc.config.schema import RunConfig
from fedadc.config.schema import field_types as _hints  # read by the Flower mapping
from fedadc.config.typed import to_run_config

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

FLOWER_NULL_IF_NOT_POSITIVE = frozenset({"budget-epochs", "lr"})
"""Flower keys where a value <= 0 means null (no budget, automatic lr): TOML has no null."""

FLOWER_STR_KEYS = frozenset(
    {"method", "model", "data", "partition", "mode", "results-dir", "overrides"}
)
"""Flower keys whose value must be a string; all other mapped keys must be numbers."""
FLOWER_INTERNAL_KEYS = frozenset({"resume", "fast-sim"})
"""Run-config keys the Flower app reads itself (not Hydra config): ignored here. Together
with :data:`FLOWER_KEYS` they are pyproject's ``[tool.flwr.app.config]``."""

_GROUP_OPTION = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-/]*$")
_HYDRA_LOCK = threading.Lock()


def compose(overrides: Sequence[str] | str = (), config_name: str = "config") -> RunConfig:
    """Compose ``conf/<config_name>.yaml`` with Hydra ``overrides`` into a RunConfig.

    ``overrides`` are Hydra's (``method=topk xi=0.05 federation.rounds=3``); a single string
    is split like a shell line. Safe to call repeatedly and from inside a running Hydra app
    (its global state is put back afterwards). Errors are ``ValueError``.
    """
    if isinstance(overrides, str):
        overrides = shlex.split(overrides)
    directory = conf_dir()
    prepared = prepare_overrides([str(o) for o in overrides], directory)
    try:
        with _HYDRA_LOCK, _private_hydra(directory):
            cfg = hydra.compose(config_name=config_name, overrides=prepared)
    except (HydraException, OmegaConfBaseException) as e:
        raise ValueError(f"cannot compose config {config_name!r} from {directory}: {e}") from e
    return to_run_config(cfg)


@contextmanager
def _private_hydra(directory: Path) -> Iterator[None]:
    """Initialise Hydra on ``directory``, restoring whatever Hydra state was there before
    (``@hydra.main`` apps keep working after we compose inside them)."""
    outer = GlobalHydra.instance()
    outer_hydra = outer.hydra
    outer_base = VersionBase.instance().getbase()
    outer.clear()
    try:
        with hydra.initialize_config_dir(
            version_base="1.3", config_dir=str(directory), job_name="fedadc"
        ):
            yield
    finally:
        GlobalHydra.set_instance(outer)
        outer.hydra = outer_hydra
        VersionBase.instance().version_base = outer_base


# ---------------------------------------------------------------- Flower


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
            extra = shlex.split(value)
        elif dataclasses.is_dataclass(_hints(RunConfig).get(hydra_key)):  # a group
            if not _GROUP_OPTION.match(value):
                raise ValueError(f"Flower run-config {flower_key!r}: bad option name {value!r}")
            if value not in group_options(hydra_key):
                raise ValueError(
                    f"Flower run-config {flower_key!r} has no choice {value!r}; valid choices: "
                    f"{group_options(hydra_key)}"
                )
            groups.append(f"{hydra_key}={value}")
        else:
            if flower_key not in FLOWER_STR_KEYS and (
                isinstance(value, bool) or not isinstance(value, (int, float))
            ):
                raise ValueError(
                    f"Flower run-config {flower_key!r} must be a number, got {value!r}"
                )
            if flower_key in FLOWER_NULL_IF_NOT_POSITIVE and value <= 0:
                value = None
            values.append(f"{hydra_key}={hydra_value(value)}")
    return groups + values + extra


def hydra_value(value: bool | int | float | str | None) -> str:
    """``value`` in Hydra's override grammar: strings single-quoted so that spaces, commas
    and brackets stay literal (``${...}`` interpolations still resolve) and read back as
    exactly themselves: Hydra reads a backslash as an escape only before a quote or at the
    end, so only those are doubled."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    escaped = re.sub(r"(\\*)'", lambda m: m.group(1) * 2 + "\\'", value)
    escaped = re.sub(r"(\\+)$", lambda m: m.group(1) * 2, escaped)
    return f"'{escaped}'"
