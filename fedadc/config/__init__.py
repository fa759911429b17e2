"""Typed run configuration: Hydra YAML in ``conf/`` -> frozen dataclasses (``RunConfig``).

``compose(["method=topk", "xi=0.05"])`` is the entry point for code and tests;
``overrides_from_flower(context.run_config)`` feeds it from the Flower app.
"""

from fedadc.config.compose import (
    FLOWER_INTERNAL_KEYS,
    FLOWER_KEYS,
    compose,
    conf_dir,
    overrides_from_flower,
)
from fedadc.config.schema import (
    DataConfig,
    FederationConfig,
    MethodConfig,
    ModelConfig,
    OptimConfig,
    PartitionConfig,
    RunConfig,
    WireConfig,
)
from fedadc.config.typed import to_dict, to_run_config
from fedadc.config.validate import validate

__all__ = [
    "FLOWER_INTERNAL_KEYS",
    "FLOWER_KEYS",
    "DataConfig",
    "FederationConfig",
    "MethodConfig",
    "ModelConfig",
    "OptimConfig",
    "PartitionConfig",
    "RunConfig",
    "WireConfig",
    "compose",
    "conf_dir",
    "overrides_from_flower",
    "to_dict",
    "to_run_config",
    "validate",
]
