"""Compose the Hydra config groups of ``conf/`` into a typed :class:`RunConfig`.

Hydra does what it is good at (groups, defaults, overrides, interpolation); the frozen
dataclasses of :mod:`fedadc.config.schema` are the single authority on which keys exist and
what their values may be. So a key that the schema does not know is an error naming it, even
when Hydra would have accepted it, and a key the schema knows may be overridden even when an
option's YAML leaves it out (the dataclass default applies then).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
import shlex
import threading
import types
import typing
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Union

import hydra
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import OverrideType
from hydra.errors import HydraException
from hydra.version import VersionBase
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from fedadc.config.schema import RunConfig

CONF_DIR_ENV = "FEDADC_CONF_DIR"
"""Environment variable naming another ``conf`` folder (an installed copy, a test's)."""

CONSUMED_KEYS = ("xi",)
"""Top-level keys that exist only to be interpolated into groups (not RunConfig fields)."""

_HYDRA_LOCK = threading.Lock()


# ---------------------------------------------------------------- resolvers


def _positive(name: str, xi: object) -> float:
    if isinstance(xi, bool) or not isinstance(xi, (int, float)) or not xi > 0:
        raise ValueError(f"{name}: xi must be a number > 0, got {xi!r}")
    return float(xi)


def inverse_round(xi: float) -> int:
    """C3-SL's group size for ratio ``xi``: ``max(1, round(1 / xi))`` (Python's round)."""
    return max(1, round(1.0 / _positive("fedadc.inverse_round", xi)))


def bits_for(xi: float) -> int:
    """Quantization bits for ratio ``xi`` of float32: ``min(16, max(1, round(32 * xi)))``."""
    return min(16, max(1, round(32.0 * _positive("fedadc.bits_for", xi))))


OmegaConf.register_new_resolver("fedadc.inverse_round", inverse_round, replace=True)
OmegaConf.register_new_resolver("fedadc.bits_for", bits_for, replace=True)


# ---------------------------------------------------------------- composing


def conf_dir() -> Path:
    """The ``conf`` folder: ``$FEDADC_CONF_DIR`` if set, else ``<repo root>/conf``."""
    env = os.environ.get(CONF_DIR_ENV)
    if env:
        path = Path(env).expanduser().resolve()
        if not path.is_dir():
            raise FileNotFoundError(f"{CONF_DIR_ENV}={env!r} is not a directory")
        return path
    path = Path(__file__).resolve().parents[2] / "conf"
    if not path.is_dir():
        raise FileNotFoundError(
            f"no Hydra config folder at {path} (fedadc installed without its conf/?); "
            f"set {CONF_DIR_ENV} to the project's conf/ directory"
        )
    return path


def compose(overrides: Sequence[str] | str = (), config_name: str = "config") -> RunConfig:
    """Compose ``conf/<config_name>.yaml`` with Hydra ``overrides`` into a RunConfig.

    ``overrides`` are Hydra's (``method=topk xi=0.05 federation.rounds=3``); a single string
    is split like a shell line. Safe to call repeatedly and from inside a running Hydra app
    (its global state is put back afterwards). Errors are ``ValueError``.
    """
    if isinstance(overrides, str):
        overrides = shlex.split(overrides)
    directory = conf_dir()
    prepared = _prepare_overrides([str(o) for o in overrides], directory)
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


def _prepare_overrides(overrides: list[str], directory: Path) -> list[str]:
    """Check value overrides against the schema and force-add them (``++``).

    The schema, not each option's YAML, decides which keys exist, so ``method.params.mode=x``
    works whichever method YAML is chosen, and a typo is reported with the valid keys.
    Group selections, deletions, packages and ``hydra.*`` pass through untouched.
    """
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException as e:
        raise ValueError(f"invalid override: {e}") from e
    prepared = []
    for text, override in zip(overrides, parsed, strict=True):
        key = override.key_or_group
        passthrough = (
            key == "hydra"
            or key.startswith("hydra.")
            or override.package is not None
            or override.is_delete()
            or ("." not in key and (directory / key).is_dir())
        )
        if not passthrough:
            _check_key(key)
            if override.type == OverrideType.CHANGE:
                text = "++" + text.strip()
        elif "." not in key and (directory / key).is_dir() and not override.is_delete():
            value = override.value()
            if isinstance(value, str) and value not in group_options(key, directory):
                raise ValueError(
                    f"config group {key!r} has no option {value!r}; valid choices: "
                    f"{group_options(key, directory)} (the YAML files in {directory / key})"
                )
        prepared.append(text)
    return prepared


def group_options(group: str, directory: Path | None = None) -> list[str]:
    """The options of config group ``group``: its YAML files' names."""
    folder = (directory or conf_dir()) / group
    return sorted(p.stem for p in folder.glob("*.yaml"))


def _check_key(key: str) -> None:
    """``ValueError`` naming ``key`` and the valid keys if the schema has no such key."""
    parts = key.split(".")
    cls: type = RunConfig
    for depth, part in enumerate(parts):
        hints = _hints(cls)
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


# ---------------------------------------------------------------- DictConfig -> RunConfig


def to_run_config(cfg: DictConfig | Mapping[str, Any]) -> RunConfig:
    """Resolve ``cfg`` and build the frozen dataclasses, strictly.

    Unknown keys anywhere, wrong value types and mandatory values (``???``) left unset are
    ``ValueError`` naming the full key; the dataclasses' own validation errors pass through.
    ``xi`` is consumed: it reaches the method only through its interpolations.
    """
    if not isinstance(cfg, DictConfig):
        cfg = OmegaConf.create(dict(cfg))
    try:
        data = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except MissingMandatoryValue as e:
        raise ValueError(
            f"{e.full_key} is mandatory ('???' in the config) and was not set: "
            f"add the override {e.full_key}=..."
        ) from e
    except OmegaConfBaseException as e:
        raise ValueError(f"cannot resolve the config: {e}") from e
    assert isinstance(data, dict)
    data.pop("hydra", None)  # Hydra's own node, if the caller composed with it
    for name in CONSUMED_KEYS:
        if name in data:
            _check_xi(data.pop(name))
    return _build(RunConfig, data, "")


def to_dict(run: RunConfig) -> dict[str, Any]:
    """A plain, JSON-serialisable copy of ``run`` (the resolved config a run records);
    ``to_run_config(OmegaConf.create(to_dict(run))) == run``."""
    return dataclasses.asdict(run)


def _check_xi(xi: object) -> None:
    if isinstance(xi, bool) or not isinstance(xi, (int, float)) or not 0.0 < xi <= 1.0:
        raise ValueError(f"xi must be a number in (0, 1], got {xi!r}")


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    """Field name -> resolved annotation (the schema uses postponed annotations)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in typing.get_type_hints(cls).items() if k in names}


def _build(cls: type, data: object, prefix: str) -> Any:
    hints = _hints(cls)
    where = prefix[:-1] or "the top level"
    if not isinstance(data, Mapping):
        raise ValueError(f"{where} must be a mapping with keys {sorted(hints)}, got {data!r}")
    unknown = sorted(str(k) for k in data if k not in hints)
    if unknown:
        names = [prefix + k for k in unknown]
        valid = sorted(hints) + (list(CONSUMED_KEYS) if cls is RunConfig else [])
        raise ValueError(
            f"unknown config key{'s' if len(names) > 1 else ''} "
            f"{', '.join(repr(n) for n in names)}; valid keys at {where}: {valid}"
        )
    kwargs = {}
    for name, value in data.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, value, f"{prefix}{name}.")
        else:
            kwargs[name] = _coerce(prefix + name, hint, value)
    return cls(**kwargs)


def _is_dict(hint: object) -> bool:
    return hint is dict or typing.get_origin(hint) is dict


def _coerce(key: str, hint: Any, value: Any) -> Any:
    """Check ``value`` against the field's annotation; ints are accepted for floats."""
    if typing.get_origin(hint) in (Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(key, option, value)
            except ValueError:
                pass
        names = " or ".join(_type_name(o) for o in options)
        raise ValueError(f"{key} must be {names}, got {value!r}")
    ok: bool
    if _is_dict(hint):
        ok = isinstance(value, Mapping)
        value = dict(value) if ok else value
    elif hint is bool:
        ok = isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif hint is str:
        ok = isinstance(value, str)
    else:  # an annotation we do not check: the dataclass validates it
        ok = True
    if not ok:
        raise ValueError(f"{key} must be {_type_name(hint)}, got {value!r}")
    return value


def _type_name(hint: Any) -> str:
    if hint is type(None):
        return "null"
    if _is_dict(hint):
        return "a mapping"
    return getattr(hint, "__name__", str(hint))


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
