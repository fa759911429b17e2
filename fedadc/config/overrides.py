"""Hydra overrides checked against the schema before Hydra sees them.

The schema, not each option's YAML, decides which keys exist: a value override is
force-added (``++``), so ``method.params.mode=x`` works whichever method YAML is chosen, and
a typo is reported with the valid keys. A group selection must name one of the group's YAML
files. Group selections, deletions, packages and ``hydra.*`` otherwise pass through.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import OverrideType
from hydra.errors import HydraException

from fedadc.config.folder import group_options
from fedadc.config.schema import CONSUMED_KEYS, RunConfig, field_types


def prepare_overrides(overrides: list[str], directory: Path) -> list[str]:
    """``overrides`` ready for ``hydra.compose`` on ``directory``; ``ValueError`` naming a
    key the schema does not have, or a group option that does not exist."""
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException as e:
        raise ValueError(f"invalid override: {e}") from e
    prepared = []
    for text, override in zip(overrides, parsed, strict=True):
        key = override.key_or_group
        group = "." not in key and (directory / key).is_dir()
        passthrough = (
            key == "hydra"
            or key.startswith("hydra.")
            or override.package is not None
            or override.is_delete()
            or group
        )
        if not passthrough:
            check_key(key)
            if override.type == OverrideType.CHANGE:
                text = "++" + text.strip()
        elif group and not override.is_delete():
            value = override.value()
            if isinstance(value, str) and value not in group_options(key, directory):
                raise ValueError(
                    f"config group {key!r} has no option {value!r}; valid choices: "
                    f"{group_options(key, directory)} (the YAML files in {directory / key})"
                )
        prepared.append(text)
    return prepared


def check_key(key: str) -> None:
    """``ValueError`` naming ``key`` and the valid keys if the schema has no such key."""
    parts = key.split(".")
    cls: type = RunConfig
    for depth, part in enumerate(parts):
        hints = field_types(cls)
        valid = sorted(hints) + (list(CONSUMED_KEYS) if cls is RunConfig else [])
        if part not in valid:
            where = ".".join(parts[:depth]) or "the top level"
            raise ValueError(f"unknown config key {key!r}; valid keys at {where}: {valid}")
        hint = hints.get(part)
        if hint is not None and dataclasses.is_dataclass(hint):
            cls = hint
            continue
        if depth + 1 < len(parts) and not _is_dict(hint):
            raise ValueError(
                f"unknown config key {key!r}: {'.'.join(parts[: depth + 1])} is a value, "
                "not a group"
            )
        return  # a value, or a key inside a free-form dict (model.kwargs, method.params)


def _is_dict(hint: object) -> bool:
    return hint is dict or getattr(hint, "__origin__", None) is dict
