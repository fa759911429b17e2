"""Compression methods for the split point, one module each, one interface (``base``)."""

from fedadc.compression import adc, bottlenet, c3sl, identity, quantization, topk  # noqa: F401
from fedadc.compression.base import Compressor, Encoded, Plan, Received
from fedadc.compression.registry import (
    compressor_params,
    create_compressor,
    list_compressors,
    register_compressor,
)

__all__ = [
    "Compressor",
    "Encoded",
    "Plan",
    "Received",
    "compressor_params",
    "create_compressor",
    "list_compressors",
    "register_compressor",
]
