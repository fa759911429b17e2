"""The shape contract between a client head and a server tail."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TokenSpec:
    """What crosses the split point for one uncompressed sample.

    Compressors are built against a spec so that both sides of the wire agree on shapes
    without sending them: ``num_tokens`` (n, prefix tokens included), ``dim`` (d), the
    number of prefix tokens (CLS + registers, always kept by token selection) and the
    number of classes (soft labels, label validation).
    """

    num_tokens: int
    dim: int
    num_classes: int
    num_prefix_tokens: int = 1

    def __post_init__(self) -> None:
        for name in ("num_tokens", "dim", "num_classes"):
            if getattr(self, name) < 1:
                raise ValueError(f"TokenSpec.{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.num_prefix_tokens < self.num_tokens:
            raise ValueError(
                f"TokenSpec.num_prefix_tokens must be in [0, num_tokens), got "
                f"{self.num_prefix_tokens} for num_tokens={self.num_tokens}"
            )

    @property
    def sample_features(self) -> int:
        """D = n * d, the float count of one uncompressed sample."""
        return self.num_tokens * self.dim

    def uncompressed_bytes(self, batch_size: int) -> int:
        """C_Base of the paper for one direction: B x n x d float32."""
        return batch_size * self.sample_features * 4
