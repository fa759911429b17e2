"""Splitting timm Vision Transformers into a client head and a server tail."""

from fedadc.model.spec import TokenSpec

__all__ = ["TokenSpec"]
