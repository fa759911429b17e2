"""Splitting timm Vision Transformers into a client head and a server tail."""

from fedadc.model.factory import create_vit
from fedadc.model.spec import TokenSpec
from fedadc.model.split import ClientHead, HeadOutput, ServerTail, SplitViT, split_vit

__all__ = [
    "ClientHead",
    "HeadOutput",
    "ServerTail",
    "SplitViT",
    "TokenSpec",
    "create_vit",
    "split_vit",
]
