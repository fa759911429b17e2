"""fedadc: communication-efficient federated split learning of Vision Transformers.

The pure-PyTorch core (no Flower import): cut a timm ViT with :func:`split_vit`, pick a
compression method with :func:`create_compressor`, exchange :class:`Payload` bytes counted
by a :class:`Ledger`, or run the whole in-process reference with :func:`train_reference`.
"""

from fedadc.compression import Compressor, create_compressor, list_compressors
from fedadc.compression.kmeans import kmeans
from fedadc.config.schema import RunConfig
from fedadc.federated.reference import train_reference
from fedadc.model import ClientHead, ServerTail, TokenSpec, create_vit, split_vit
from fedadc.step import SplitClient, SplitServer
from fedadc.wire import Kind, Ledger, Payload, PayloadError, WireFormat

__all__ = [
    "ClientHead",
    "Compressor",
    "Kind",
    "Ledger",
    "Payload",
    "PayloadError",
    "RunConfig",
    "ServerTail",
    "SplitClient",
    "SplitServer",
    "TokenSpec",
    "WireFormat",
    "create_compressor",
    "create_vit",
    "kmeans",
    "list_compressors",
    "split_vit",
    "train_reference",
]
__version__ = "0.1.0"
