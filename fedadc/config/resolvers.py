"""The ``${fedadc.*:xi}`` resolvers: how a method YAML turns the one ``xi`` knob into its
own parameter (registered with OmegaConf on import)."""

from __future__ import annotations

from omegaconf import OmegaConf


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
