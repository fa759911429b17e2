"""The server tail cut once more for U-shaped split learning: middle (server) and end (client).

In U-shape the client keeps the model's end, so the loss and the labels never leave it:

    client: head(images) -> compressor -> server: middle -> client: end -> loss(labels)

:class:`UShapeTail` is a drop-in for :class:`~fedadc.model.split.ServerTail` (same
``forward``), so evaluation and checkpoints treat both shapes alike; training reaches its
two parts, ``middle`` and ``end``.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from fedadc.model.precision import autocast
from fedadc.model.split import ServerTail


class ServerMiddle(nn.Module):
    """The server's blocks in U-shape: ``tail.blocks[:len - end_blocks]``, nothing else."""

    precision: str = "fp32"

    def __init__(self, blocks: nn.Sequential) -> None:
        super().__init__()
        self.blocks = blocks

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        with autocast(self.precision, tokens.device):
            out = self.blocks(tokens)
        return out.float() if self.precision != "fp32" else out


class UShapeTail(nn.Module):
    """A :class:`ServerTail` split into ``middle`` (server) and ``end`` (client).

    Modifications from the tail: its last ``end_blocks`` blocks, the final norm and timm's
    ``forward_head`` move into ``end`` (a :class:`ServerTail` of those blocks); the rest of
    the blocks form ``middle``. ``end(middle(x)) == tail(x)`` for the same weights.
    """

    def __init__(self, tail: ServerTail, end_blocks: int = 0) -> None:
        super().__init__()
        blocks = tail.vit.blocks
        keep = len(blocks) - end_blocks
        if end_blocks < 0 or keep < 1:
            raise ValueError(
                f"model.end_blocks must leave the server at least one block: the tail has "
                f"{len(blocks)} blocks, got end_blocks={end_blocks} (lower it, or split later)"
            )
        self.middle = ServerMiddle(blocks[:keep])
        self.middle.precision = tail.precision
        self.end = ServerTail(copy.deepcopy(tail.vit), keep)
        self.end.precision = tail.precision

    @property
    def end_reads_class_token_only(self) -> bool:
        """True when the end's output depends only on the class token row: no end blocks
        (they mix tokens) and timm's ``global_pool='token'`` pooling with no attention pool.
        The final norm is per token. Then the server returns, and receives the gradient of,
        the class token row alone (exact: the other rows' gradient is zero)."""
        vit = self.end.vit
        return (
            len(vit.blocks) == 0
            and vit.global_pool == "token"
            and getattr(vit, "attn_pool", None) is None
            and getattr(vit, "has_class_token", False)  # timm puts it first: row 0
        )

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.end(self.middle(tokens))
