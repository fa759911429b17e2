"""The two roles of one split-learning step, talking only through bytes.

``SplitClient`` and ``SplitServer`` are what both the in-process reference trainer and the
Flower apps drive; whatever carries the bytes between them (a function call, Flower
messages), the math is the same.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fedadc.compression.base import Compressor, Encoded, Plan
from fedadc.model.split import ClientHead, ServerTail
from fedadc.wire.payload import Payload, PayloadError


@dataclass
class PendingStep:
    """What the client keeps between sending a payload and receiving its gradient."""

    encoded: Encoded
    plan: Plan
    batch_size: int


@dataclass(frozen=True)
class StepMetrics:
    loss: float
    num_samples: int
    """Samples the server trained on (T for ADC)."""


class SplitClient:
    """Runs the head and the compressor's client side; steps the head optimizer."""

    def __init__(
        self,
        head: ClientHead,
        compressor: Compressor,
        optimizer: torch.optim.Optimizer,
        generator: torch.Generator | None = None,
    ) -> None:
        self.head = head
        self.compressor = compressor
        self.optimizer = optimizer
        self.generator = generator
        self.pending: PendingStep | None = None

    def forward(
        self, images: torch.Tensor, labels: torch.Tensor, plan: Plan | None = None
    ) -> Payload:
        """Head forward + compression. With ``plan`` given, replay that step exactly."""
        if self.pending is not None:
            raise RuntimeError("the previous step has not received its gradient yet")
        self.head.train()
        self.compressor.train()
        out = self.head(images)
        if plan is None:
            plan = self.compressor.make_plan(
                out.tokens.detach(), out.cls_attention, labels, self.generator
            )
        encoded = self.compressor.encode(out.tokens, labels, plan)
        self.pending = PendingStep(encoded, plan, images.shape[0])
        return encoded.payload

    def backward(self, gradient: Payload) -> None:
        """Apply the server's gradient to the pending graph and step the optimizer."""
        if self.pending is None:
            raise RuntimeError("no pending step: call forward() first")
        sent = self.pending.encoded.sent
        grad = self.compressor.decode_gradient(gradient).to(sent.device)
        if grad.shape != sent.shape:
            raise PayloadError(
                f"gradient shape {tuple(grad.shape)} does not match the sent activations "
                f"{tuple(sent.shape)}"
            )
        self.optimizer.zero_grad(set_to_none=True)
        torch.autograd.backward(sent, grad)
        self.optimizer.step()
        self.pending = None


class SplitServer:
    """Runs the tail and the compressor's server side; steps the tail optimizer."""

    def __init__(
        self,
        tail: ServerTail,
        compressor: Compressor,
        optimizer: torch.optim.Optimizer,
        device: torch.device | str = "cpu",
    ) -> None:
        self.tail = tail
        self.compressor = compressor
        self.optimizer = optimizer
        self.device = torch.device(device)

    def step(self, payload: Payload) -> tuple[Payload, StepMetrics]:
        """One tail step on a received payload; returns the gradient payload."""
        self.tail.train()
        self.compressor.train()
        received = self.compressor.receive(payload, self.device)
        logits = self.tail(received.server_input)
        loss = F.cross_entropy(logits, received.targets)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        gradient = self.compressor.encode_gradient(received.leaf.grad, payload)
        return gradient, StepMetrics(float(loss.detach()), int(logits.shape[0]))
