"""The two roles of one split-learning step, talking only through bytes.

``SplitClient`` and ``SplitServer`` are the step that every run drives: the README
example directly, the federated client (``fedadc.federated.client``, which restores and
saves a ``SplitClient`` around each message) and the server of the round loop. Whatever
carries the bytes between them (a function call, Flower messages), the math is the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fedadc.compression.base import Compressor, Encoded, Plan
from fedadc.model.split import ClientHead, ServerTail
from fedadc.wire.payload import Payload, PayloadError, WireFormat

HEAD_UPDATES = ("accumulated", "stale")
"""How a client updates its head from the S gradients of one message: ``accumulated``
(one optimizer step on their mean) or ``stale`` (S steps, each on one stored gradient)."""


@dataclass
class PendingStep:
    """What the client keeps between sending a payload and receiving its gradient."""

    encoded: Encoded
    plan: Plan
    batch_size: int
    key: int = 0
    """The caller's name for the step (its index in the round), for error messages."""


@dataclass(frozen=True)
class StepMetrics:
    loss: float
    num_samples: int
    """Samples the server trained on (T for ADC)."""


class SplitClient:
    """Runs the head and the compressor's client side; steps the head optimizer.

    Several steps may be pending (S payloads sent before their gradients come back); the
    gradients are applied together by :meth:`backward`, in the order the steps were sent.
    """

    def __init__(
        self,
        head: ClientHead,
        compressor: Compressor,
        optimizer: torch.optim.Optimizer,
        generator: torch.Generator | None = None,
        *,
        wire: WireFormat | None = None,
        head_update: str = "accumulated",
    ) -> None:
        if head_update not in HEAD_UPDATES:
            raise ValueError(f"head_update must be one of {HEAD_UPDATES}, got {head_update!r}")
        self.head = head
        self.compressor = compressor
        self.optimizer = optimizer
        self.generator = generator
        self.wire = wire or WireFormat()
        self.head_update = head_update
        self.pending: list[PendingStep] = []

    def forward(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        plan: Plan | None = None,
        *,
        key: int = 0,
        seed: int | None = None,
        generator: torch.Generator | None = None,
    ) -> Payload:
        """Head forward + compression; the payload to send, in this client's wire format.

        ``plan`` replays a step exactly (its clusters, kept tokens, ...); ``seed`` forks the
        torch RNG for the forward, so dropout and drop-path draw the same masks whenever
        the step is recomputed; ``generator`` (default: the client's) draws a new plan.
        """
        self.head.train()
        self.compressor.train()
        if seed is None:
            out = self.head(images)
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                out = self.head(images)
        if plan is None:
            plan = self.compressor.make_plan(
                out.tokens.detach(), out.cls_attention, labels, generator or self.generator
            )
        encoded = self.compressor.encode(out.tokens, labels, plan)
        encoded.payload.wire = self.wire
        self.pending.append(PendingStep(encoded, plan, int(images.shape[0]), key))
        return encoded.payload

    def backward(self, gradients: Payload | Sequence[Payload]) -> None:
        """Apply the server's gradients (one per pending step, in order); step the optimizer."""
        grads = [gradients] if isinstance(gradients, Payload) else list(gradients)
        if len(grads) != len(self.pending):
            raise ValueError(
                f"{len(self.pending)} pending steps but received {len(grads)} gradients"
            )
        if not self.pending:
            raise RuntimeError("no pending step: call forward() first")
        decoded = [self._gradient(step, g) for step, g in zip(self.pending, grads, strict=True)]
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        params = [p for p in params if p.requires_grad]
        self.optimizer.zero_grad(set_to_none=True)
        if self.head_update == "stale":
            per_step = [
                torch.autograd.grad(step.encoded.sent, params, grad, allow_unused=True)
                for step, grad in zip(self.pending, decoded, strict=True)
            ]
            for step_grads in per_step:
                for p, g in zip(params, step_grads, strict=True):
                    p.grad = g
                self.optimizer.step()
        else:  # one head step on the mean gradient of the pending steps
            for step, grad in zip(self.pending, decoded, strict=True):
                torch.autograd.backward(step.encoded.sent, grad / len(decoded))
            self.optimizer.step()
        self.pending = []

    def _gradient(self, step: PendingStep, payload: Payload) -> torch.Tensor:
        sent = step.encoded.sent
        grad = self.compressor.decode_gradient(payload).to(sent.device)
        if grad.shape != sent.shape:
            raise PayloadError(
                f"gradient shape {tuple(grad.shape)} does not match the payload sent for "
                f"step {step.key} {tuple(sent.shape)}"
            )
        return grad


class SplitServer:
    """Runs the tail and the compressor's server side; steps the tail optimizer."""

    def __init__(
        self,
        tail: ServerTail,
        compressor: Compressor,
        optimizer: torch.optim.Optimizer,
        device: torch.device | str = "cpu",
        *,
        wire: WireFormat | None = None,
    ) -> None:
        self.tail = tail
        self.compressor = compressor
        self.optimizer = optimizer
        self.device = torch.device(device)
        self.wire = wire or WireFormat()

    def step(self, payload: Payload) -> tuple[Payload, StepMetrics]:
        """One tail step on a received payload; returns the gradient payload."""
        (gradient,), metrics = self.step_joint([payload])
        return gradient, metrics

    def step_joint(self, payloads: Sequence[Payload]) -> tuple[list[Payload], StepMetrics]:
        """One tail step on several payloads at once (e.g. every client's payload of one
        exchange): their rows form one batch, the loss is its mean; each payload gets the
        gradient of what it sent."""
        self.tail.train()
        self.compressor.train()
        received = [self.compressor.receive(p, self.device) for p in payloads]
        logits = self.tail(torch.cat([r.server_input for r in received]))
        targets = torch.cat([r.targets for r in received])
        weights = [r.weights for r in received]
        if all(w is None for w in weights):
            loss = F.cross_entropy(logits, targets)
        else:  # weighted mean over merged samples (e.g. by the samples each one holds)
            if any(w is None for w in weights):
                raise PayloadError("some payloads carry loss weights and others do not")
            weight = torch.cat(weights)  # type: ignore[arg-type]
            per_row = F.cross_entropy(logits, targets, reduction="none")
            loss = (per_row * weight).sum() / weight.sum()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        gradients = []
        for r, payload in zip(received, payloads, strict=True):
            gradient = self.compressor.encode_gradient(r.leaf.grad, payload)
            gradient.wire = self.wire
            gradients.append(gradient)
        return gradients, StepMetrics(float(loss.detach()), int(logits.shape[0]))
