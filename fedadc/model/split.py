"""Cut a timm VisionTransformer into the client head and the server tail.

We cut at timm's own seams instead of re-implementing the ViT: the head is timm's
``forward_features`` with the blocks truncated to ``blocks[:split_at]`` and the final norm
removed; the tail is ``blocks[split_at:]``, the final norm and timm's ``forward_head``.
So ``tail(head(x).tokens) == model(x)`` exactly, and any VisionTransformer variant (DeiT,
ViT, registers, small from-scratch configs) works.
"""

from __future__ import annotations

import copy
from typing import NamedTuple

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from fedadc.model.cls_attention import ClsAttentionRecorder
from fedadc.model.factory import create_vit
from fedadc.model.precision import autocast
from fedadc.model.spec import TokenSpec


class HeadOutput(NamedTuple):
    tokens: torch.Tensor
    """B x n x d activations at the split point."""
    cls_attention: torch.Tensor | None
    """B x n CLS attention row of the last client block (None without a class token)."""


class ClientHead(nn.Module):
    """Patch embedding, positional embedding, prefix tokens and ``blocks[:split_at]``.

    Modifications from timm's ``VisionTransformer.forward_features``:

    * ``blocks`` keeps only the first ``split_at`` blocks and the final ``norm`` is removed
      (it belongs to the tail);
    * the last block's attention runs timm's explicit softmax path and its CLS row is
      recorded (:mod:`fedadc.model.cls_attention`); the other blocks stay fused;
    * input images are checked against the model's size with a clear error.
    """

    precision: str = "fp32"
    """``bf16``: the forward runs under autocast (:mod:`fedadc.model.precision`); its
    outputs are cast back to float32 before the compressor sees them."""

    def __init__(self, vit: VisionTransformer, split_at: int) -> None:
        super().__init__()
        vit.blocks = vit.blocks[:split_at]
        vit.norm = nn.Identity()
        vit.fc_norm = nn.Identity()
        vit.head_drop = nn.Identity()
        vit.head = nn.Identity()
        vit.attn_pool = None
        self.vit = vit
        self.has_class_token = vit.cls_token is not None
        self._recorder = ClsAttentionRecorder(vit.blocks[-1].attn) if self.has_class_token else None

    def forward(self, images: torch.Tensor) -> HeadOutput:
        self._check_images(images)
        with autocast(self.precision, images.device):
            tokens = self.vit.forward_features(images)
        row = self._recorder.pop() if self._recorder is not None else None
        if self.precision != "fp32":
            tokens, row = tokens.float(), row.float() if row is not None else None
        return HeadOutput(tokens, row)

    def _check_images(self, images: torch.Tensor) -> None:
        pe = self.vit.patch_embed
        expected = (pe.proj.in_channels, *pe.img_size) if pe.img_size is not None else None
        if images.ndim != 4 or (
            expected is not None
            and pe.strict_img_size
            and tuple(images.shape[1:]) != tuple(expected)
        ):
            raise ValueError(
                f"input images must be B x {' x '.join(map(str, expected or ('C', 'H', 'W')))}"
                f" for this model, got {tuple(images.shape)}; resize the data (data.img_size) "
                "or build the model with a matching img_size / in_chans"
            )


class ServerTail(nn.Module):
    """``blocks[split_at:]``, the final norm and timm's ``forward_head``.

    Modifications from timm: the embedding layers and prefix tokens are dropped (they live
    on the client). The blocks accept any token count, so compressed inputs with fewer
    tokens (ADC) need no mask.
    """

    precision: str = "fp32"
    """``bf16``: the forward runs under autocast; the logits are float32, so the loss is."""

    def __init__(self, vit: VisionTransformer, split_at: int) -> None:
        super().__init__()
        vit.blocks = vit.blocks[split_at:]
        vit.patch_embed = nn.Identity()
        vit.cls_token = None
        vit.reg_token = None
        vit.pos_embed = None
        self.vit = vit

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        with autocast(self.precision, tokens.device):
            logits = self.vit.forward_head(self.vit.norm(self.vit.blocks(tokens)))
        return logits.float() if self.precision != "fp32" else logits


class SplitViT(NamedTuple):
    head: ClientHead
    tail: ServerTail
    spec: TokenSpec


def split_vit(
    model: str | VisionTransformer,
    split_at: int = 3,
    **create_kwargs: object,
) -> SplitViT:
    """Split a timm ViT (an instance, or a name built with :func:`create_vit`).

    The model itself is not modified: head and tail are independent copies.
    """
    vit = create_vit(model, **create_kwargs) if isinstance(model, str) else model
    if not isinstance(vit, VisionTransformer):
        raise ValueError(
            f"split_vit needs a timm VisionTransformer, got {type(vit).__name__}; "
            "use a ViT/DeiT model name such as 'deit_tiny_patch16_224'"
        )
    if create_kwargs and not isinstance(model, str):
        raise ValueError("model options are only accepted with a model name, not an instance")
    depth = len(vit.blocks)
    if not 1 <= split_at <= depth - 1:
        raise ValueError(
            f"split_at must be in [1, {depth - 1}] for a {depth}-block model, got {split_at}"
        )
    num_patches = vit.patch_embed.num_patches
    if num_patches is None or getattr(vit, "dynamic_img_size", False):
        raise ValueError("split_vit needs a fixed image size (dynamic_img_size=False)")
    spec = TokenSpec(
        num_tokens=num_patches + vit.num_prefix_tokens,
        dim=vit.embed_dim,
        num_classes=vit.num_classes,
        num_prefix_tokens=vit.num_prefix_tokens,
    )
    head = ClientHead(copy.deepcopy(vit), split_at)
    tail = ServerTail(copy.deepcopy(vit), split_at)
    return SplitViT(head, tail, spec)
