"""Compose the Hydra config groups of ``conf/`` into a typed :class:`RunConfig`.

Hydra does what it is good at (groups, defaults, overrides, interpolation); the frozen
dataclasses of :mod:`fedadc.config.schema` are the single authority on which keys exist and
what their values may be: :mod:`fedadc.config.overrides` checks each override's key against
them before Hydra runs, :mod:`fedadc.config.typed` types the composed result with OmegaConf's
structured configs and :mod:`fedadc.config.validate` checks the choices that need timm,
torch or the compressor registry.
"""

from __future__ import annotations

import re
import shlex
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import hydra
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException
from hydra.version import VersionBase
from omegaconf.errors import OmegaConfBaseException

from fedadc.config.folder import conf_dir
from fedadc.config.overrides import prepare_overrides
from fedadc.config.schema import RunConfig
from fedadc.config.typed import to_run_config

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
