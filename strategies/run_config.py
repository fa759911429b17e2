"""Flower's flat run config -> fedadc's typed RunConfig (composed by Hydra, cached)."""

from __future__ import annotations

from flwr.app import Context

from fedadc.config import FLOWER_INTERNAL_KEYS, compose, overrides_from_flower
from fedadc.config.schema import RunConfig

_CACHE: dict[tuple, RunConfig] = {}


def run_config(context: Context) -> RunConfig:
    """Compose once per process and run config (clients see one message per step).

    Keys the apps read themselves (``FLOWER_INTERNAL_KEYS``: resume, fast-sim) are left
    out of the composition.
    """
    key = tuple(sorted(context.run_config.items()))
    if key not in _CACHE:
        flat = {k: v for k, v in context.run_config.items() if k not in FLOWER_INTERNAL_KEYS}
        _CACHE[key] = compose(overrides_from_flower(flat))
    return _CACHE[key]
