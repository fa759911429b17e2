"""Build timm Vision Transformers by name: hub weights, a local checkpoint, or from scratch."""

from __future__ import annotations

import difflib
from pathlib import Path

import timm
from torch import nn

MODEL_EXAMPLES = ("vit_tiny_patch16_224", "deit_tiny_patch16_224", "deit_small_patch16_224")


def check_model_name(name: str) -> None:
    """``ValueError`` suggesting the closest timm ViT names when timm has no model ``name``."""
    if not timm.is_model(name) and name not in timm.list_models(pretrained=True):
        vits = timm.list_models("*vit*") + timm.list_models("deit*")
        close = difflib.get_close_matches(name, vits, n=5) or list(MODEL_EXAMPLES)
        raise ValueError(
            f"unknown timm model {name!r}; valid choices are timm's Vision Transformers "
            f"(timm.list_models('*vit*')), e.g. {close}"
        )


def create_vit(
    name: str,
    *,
    num_classes: int,
    pretrained: bool = False,
    checkpoint_path: str | None = None,
    **model_kwargs: object,
) -> nn.Module:
    """``timm.create_model`` with the options fedadc needs, and clear errors.

    * ``pretrained=True`` loads the timm/Hugging Face hub weights (needs the hub);
    * ``checkpoint_path`` loads a local timm checkpoint (``.pth``/``.safetensors``) instead,
      for machines without the hub; the classifier is re-initialised for ``num_classes``;
    * other keyword arguments go to the model constructor, e.g. ``img_size=8, patch_size=2,
      embed_dim=64, depth=6, num_heads=4, in_chans=1`` for a small from-scratch model.
    """
    check_model_name(name)
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    overlay = None
    if checkpoint_path is not None:
        path = Path(checkpoint_path).expanduser()
        if not path.is_file():
            raise ValueError(f"checkpoint_path {str(path)!r} does not exist")
        overlay = {"file": str(path)}
        pretrained = True
    try:
        return timm.create_model(
            name,
            pretrained=pretrained,
            num_classes=num_classes,
            pretrained_cfg_overlay=overlay,
            **model_kwargs,
        )
    except OSError as err:  # hub unreachable, missing weights file
        raise RuntimeError(
            f"could not load pretrained weights for {name!r} ({err}); without access to the "
            "Hugging Face hub, download the weights elsewhere and pass checkpoint_path, or "
            "train from scratch with pretrained=False"
        ) from err
