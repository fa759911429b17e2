"""Test accuracy of a split model (head + optional compressor round trip + tail)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fedadc.compression.base import Compressor
from fedadc.data.tensors import ImageSplit
from fedadc.model.split import ClientHead, ServerTail


@dataclass(frozen=True)
class EvalResult:
    loss: float
    accuracy: float
    num_samples: int


@torch.no_grad()
def evaluate(
    head: ClientHead,
    tail: ServerTail,
    split: ImageSplit,
    *,
    compressor: Compressor | None = None,
    batch_size: int = 512,
    device: str | torch.device = "cpu",
) -> EvalResult:
    """Per-sample loss and accuracy. ``compressor=None`` is the paper's uncompressed protocol;
    otherwise every batch goes through ``compressor.eval_forward``."""
    modules = [head, tail] + ([compressor] if compressor is not None else [])
    modes = [m.training for m in modules]
    for m in modules:
        m.eval()
    total_loss, correct = 0.0, 0
    try:
        for start in range(0, len(split), batch_size):
            indices = torch.arange(start, min(start + batch_size, len(split)))
            images, labels = split.batch(indices)  # no augmentation at evaluation
            images, labels = images.to(device), labels.to(device)
            tokens, cls_attention = head(images)
            if compressor is not None:
                tokens = compressor.eval_forward(tokens, cls_attention)
            logits = tail(tokens)
            total_loss += float(F.cross_entropy(logits, labels, reduction="sum"))
            correct += int((logits.argmax(dim=1) == labels).sum())
    finally:
        for m, mode in zip(modules, modes, strict=True):
            m.train(mode)
    n = len(split)
    return EvalResult(total_loss / max(n, 1), correct / max(n, 1), n)
