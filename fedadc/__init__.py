"""fedadc: communication-efficient federated split learning of Vision Transformers."""

from fedadc.compression import create_compressor, list_compressors
from fedadc.model import TokenSpec

__all__ = ["TokenSpec", "create_compressor", "list_compressors"]
__version__ = "0.1.0"
