"""A composed config -> the frozen :class:`RunConfig`, typed by OmegaConf.

OmegaConf's structured configs do the typing: the composed values are merged onto
``OmegaConf.structured(RunConfig)``, which rejects keys the dataclasses do not have and
values of the wrong type, and ``OmegaConf.to_object`` builds the dataclasses (their
``__post_init__`` checks choices and ranges, which OmegaConf 2.3 cannot express). This
module only rewords OmegaConf's errors so that each names the full key and the fix, and then
runs :func:`fedadc.config.validate.validate`. OmegaConf's own conversions apply (a number
given for a string field becomes its text, ``yes``/``true`` a bool).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import (
    ConfigKeyError,
    MissingMandatoryValue,
    OmegaConfBaseException,
    ValidationError,
)

import fedadc.config.resolvers  # noqa: F401  (registers the ${fedadc.*:xi} resolvers)
from fedadc.config.schema import CONSUMED_KEYS, RunConfig, field_types
from fedadc.config.validate import validate


def to_run_config(cfg: DictConfig | Mapping[str, Any]) -> RunConfig:
    """Resolve ``cfg``, type it against the schema and validate it.

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
    schema = _schema(data)
    try:
        run = OmegaConf.to_object(OmegaConf.merge(schema, data))
    except ConfigKeyError as e:
        raise ValueError(_unknown_key(e)) from None
    except ValidationError as e:
        raise ValueError(_wrong_type(e)) from None
    except OmegaConfBaseException as e:
        raise ValueError(f"invalid config: {e}") from None
    assert isinstance(run, RunConfig)
    validate(run)
    return run


def to_dict(run: RunConfig) -> dict[str, Any]:
    """A plain, JSON-serialisable copy of ``run`` (the resolved config a run records);
    ``to_run_config(OmegaConf.create(to_dict(run))) == run``."""
    return dataclasses.asdict(run)


def _check_xi(xi: object) -> None:
    if isinstance(xi, bool) or not isinstance(xi, (int, float)) or not 0.0 < xi <= 1.0:
        raise ValueError(f"xi must be a number in (0, 1], got {xi!r}")


def _schema(data: Mapping[str, Any]) -> DictConfig:
    """``RunConfig`` as a writable structured config. OmegaConf marks frozen dataclasses
    read-only, and it merges mappings key by key: a free-form mapping the config gives
    (``method.params``, ``model.kwargs``) must replace the default, not extend it."""
    schema = OmegaConf.structured(RunConfig)
    _unfreeze(schema, data)
    return schema


def _unfreeze(node: DictConfig, data: object) -> None:
    OmegaConf.set_readonly(node, False)
    for key in node:
        child = node[key]
        if not isinstance(child, DictConfig):
            continue
        given = data.get(key) if isinstance(data, Mapping) else None
        if OmegaConf.get_type(child) is dict:
            OmegaConf.set_readonly(child, False)
            if isinstance(given, Mapping):
                node[key] = {}
        else:
            _unfreeze(child, given)


def _unknown_key(e: ConfigKeyError) -> str:
    key = str(e.full_key)
    where = key.rpartition(".")[0]
    cls = e.object_type if dataclasses.is_dataclass(e.object_type) else RunConfig
    valid = sorted(field_types(cls)) + (list(CONSUMED_KEYS) if cls is RunConfig else [])
    return f"unknown config key {key!r}; valid keys at {where or 'the top level'}: {valid}"


def _wrong_type(e: ValidationError) -> str:
    key = str(e.full_key)
    cls = e.object_type
    hint = field_types(cls).get(str(e.key)) if dataclasses.is_dataclass(cls) else None
    if not key or hint is None:
        return f"invalid config: {e.msg}"
    return f"{key} must be {_type_name(hint)}, got {e.value!r}"


def _type_name(hint: Any) -> str:
    if hint is dict or typing.get_origin(hint) is dict:
        return "a mapping"
    options = [o for o in typing.get_args(hint) if o is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(o) for o in options) + " or null"
    return getattr(hint, "__name__", str(hint))
