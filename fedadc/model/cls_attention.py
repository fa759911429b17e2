"""Recording the CLS attention row of one timm attention layer.

ADC clusters samples by the post-softmax attention of the CLS query in the last client
block, averaged over heads. timm's fused kernel (``scaled_dot_product_attention``) never
materialises that matrix, so on this one layer we switch timm to its explicit path
(``fused_attn = False``) and read the probabilities where timm passes them through
``attn_drop``. All other blocks keep the fused kernel. Nothing of timm is re-implemented:
the hook only observes the tensor timm computes anyway.
"""

from __future__ import annotations

import torch
from torch import nn


class ClsAttentionRecorder:
    """Forward hook that keeps ``mean_h softmax(q k^T / sqrt(d_h))[:, h, 0, :]`` (detached).

    The stored row has length n and includes the CLS -> CLS entry, as in the paper.
    """

    def __init__(self, attention: nn.Module) -> None:
        if not hasattr(attention, "fused_attn") or not isinstance(
            getattr(attention, "attn_drop", None), nn.Module
        ):
            raise ValueError(
                f"cannot record CLS attention from {type(attention).__name__}: expected a "
                "timm Attention layer with 'fused_attn' and an 'attn_drop' module"
            )
        attention.fused_attn = False
        self.last: torch.Tensor | None = None
        attention.attn_drop.register_forward_hook(self._record)

    def _record(self, module: nn.Module, inputs: tuple[torch.Tensor, ...], output: object) -> None:
        probs = inputs[0]  # B x heads x n x n, post-softmax, pre-dropout
        self.last = probs[:, :, 0, :].mean(dim=1).detach()

    def pop(self) -> torch.Tensor:
        """The row recorded by the latest forward pass (B x n); clears it."""
        if self.last is None:
            raise RuntimeError("no CLS attention recorded: run the head forward first")
        row, self.last = self.last, None
        return row
