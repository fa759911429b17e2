"""Uncompressed split learning ("Base" in the paper): the reference point, xi = 1."""

from __future__ import annotations

from fedadc.compression.base import Compressor
from fedadc.compression.registry import register_compressor
from fedadc.model.spec import TokenSpec


@register_compressor("identity")
class Identity(Compressor):
    """Sends the full ``B x n x d`` float32 activations and gets the full gradient back."""

    def __init__(self, spec: TokenSpec) -> None:
        super().__init__(spec)

    def nominal_xi(self, batch_size: int) -> float:
        return 1.0
