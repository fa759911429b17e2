"""Test accuracy of a split model, by two protocols.

* ``uncompressed``: global head + tail, nothing in between (the paper's protocol).
* ``split``: head -> the compressor's inference round trip (:meth:`Compressor.eval_forward`,
  through the wire's bytes) -> tail, as the split model would be deployed. A tail that only
  ever trained on compressed inputs can score far apart on the two, so both are recorded.

Both share one head forward per batch: the second protocol costs one more tail forward
(and the codec) over the test split.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fedadc.compression.base import Compressor
from fedadc.data.tensors import ImageSplit
from fedadc.model.split import ClientHead, ServerTail
from fedadc.wire.payload import WireFormat

PROTOCOLS = ("uncompressed", "split")


@dataclass(frozen=True)
class EvalResult:
    loss: float
    accuracy: float
    num_samples: int


@dataclass(frozen=True)
class Evaluation:
    """One evaluation by both protocols; ``protocol`` names the run's headline one
    (``test_accuracy``), the method's default or ``evaluate_compressed``'s choice."""

    uncompressed: EvalResult
    split: EvalResult
    protocol: str = "uncompressed"

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got {self.protocol!r}")

    @property
    def headline(self) -> EvalResult:
        return self.uncompressed if self.protocol == "uncompressed" else self.split

    @property
    def accuracy(self) -> float:
        return self.headline.accuracy

    @property
    def loss(self) -> float:
        return self.headline.loss

    def metrics(self) -> dict[str, float]:
        """The metrics row's test columns (:data:`METRIC_KEYS`)."""
        return {
            "test_accuracy": self.accuracy,
            "test_loss": self.loss,
            "test_accuracy_uncompressed": self.uncompressed.accuracy,
            "test_loss_uncompressed": self.uncompressed.loss,
            "test_accuracy_split": self.split.accuracy,
            "test_loss_split": self.split.loss,
        }


METRIC_KEYS = (
    "test_accuracy",
    "test_loss",
    "test_accuracy_uncompressed",
    "test_loss_uncompressed",
    "test_accuracy_split",
    "test_loss_split",
)
"""Test columns of a metrics row; NaN in rounds without an evaluation."""


def not_evaluated() -> dict[str, float]:
    """The test columns of a round without an evaluation."""
    return dict.fromkeys(METRIC_KEYS, math.nan)


Route = Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]
"""Head output (tokens, CLS attention) -> the tail's input."""


@torch.no_grad()
def _evaluate_paths(
    head: ClientHead,
    tail: ServerTail,
    split: ImageSplit,
    paths: dict[str, Route],
    modules: list[torch.nn.Module],
    batch_size: int,
    device: str | torch.device,
) -> dict[str, EvalResult]:
    """Per-sample loss and accuracy of every path, one head forward per batch."""
    modes = [m.training for m in modules]
    for m in modules:
        m.eval()
    loss = dict.fromkeys(paths, 0.0)
    correct = dict.fromkeys(paths, 0)
    try:
        for start in range(0, len(split), batch_size):
            indices = torch.arange(start, min(start + batch_size, len(split)))
            images, labels = split.batch(indices)  # no augmentation at evaluation
            images, labels = images.to(device), labels.to(device)
            tokens, cls_attention = head(images)
            for name, path in paths.items():
                logits = tail(path(tokens, cls_attention))
                loss[name] += float(F.cross_entropy(logits, labels, reduction="sum"))
                correct[name] += int((logits.argmax(dim=1) == labels).sum())
    finally:
        for m, mode in zip(modules, modes, strict=True):
            m.train(mode)
    n = len(split)
    return {p: EvalResult(loss[p] / max(n, 1), correct[p] / max(n, 1), n) for p in paths}


def _uncompressed(tokens: torch.Tensor, cls_attention: torch.Tensor | None) -> torch.Tensor:
    return tokens


def _through(compressor: Compressor, wire: WireFormat | None) -> Route:
    return lambda tokens, cls_attention: compressor.eval_forward(tokens, cls_attention, wire)


def evaluate(
    head: ClientHead,
    tail: ServerTail,
    split: ImageSplit,
    *,
    compressor: Compressor | None = None,
    wire: WireFormat | None = None,
    batch_size: int = 512,
    device: str | torch.device = "cpu",
) -> EvalResult:
    """One protocol: ``compressor=None`` is the uncompressed one; otherwise every batch
    goes through ``compressor.eval_forward`` (in ``wire``'s bytes when given)."""
    path = _uncompressed if compressor is None else _through(compressor, wire)
    modules = [head, tail] + ([compressor] if compressor is not None else [])
    return _evaluate_paths(head, tail, split, {"one": path}, modules, batch_size, device)["one"]


def evaluate_both(
    head: ClientHead,
    tail: ServerTail,
    split: ImageSplit,
    compressor: Compressor,
    *,
    protocol: str = "uncompressed",
    wire: WireFormat | None = None,
    batch_size: int = 512,
    device: str | torch.device = "cpu",
) -> Evaluation:
    """Both protocols at once (see the module docstring); ``protocol`` is the headline."""
    paths = {"uncompressed": _uncompressed, "split": _through(compressor, wire)}
    modules = [head, tail, compressor]
    results = _evaluate_paths(head, tail, split, paths, modules, batch_size, device)
    return Evaluation(results["uncompressed"], results["split"], protocol)
