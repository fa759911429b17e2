"""Typed run configuration: Hydra YAML in ``conf/`` -> frozen dataclasses (``RunConfig``).

``compose(["method=topk", "xi=0.05"])`` is the entry point for code, tests and the Flower
app (``strategies/run_config.py`` maps Flower's flat run config onto the same overrides).
"""

from fedadc.config.compose import (
    compose,
    conf_dir,
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
    "to_dict",
    "to_run_config",
    "validate",
]
