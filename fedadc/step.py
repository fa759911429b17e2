"""The two roles of one split-learning step, talking only through bytes.

``SplitClient`` and ``SplitServer`` are the step that every run drives: the README
example directly, the federated client (``fedadc.federated.client``, which restores and
saves a ``SplitClient`` around each message) and the server of the round loop. Whatever
carries the bytes between them (a function call, Flower messages), the math is the same.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from fedadc.compression.base import Compressor, Encoded, Plan, Received
from fedadc.model.split import ClientHead
from fedadc.wire.payload import Kind, Payload, PayloadError, WireFormat

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
    loss_fields: Payload | None = None
    """U-shape: the payload's loss fields (labels), kept on the client."""
    end_grads: list[torch.Tensor | None] | None = None
    """U-shape: the end's parameter gradients, from :meth:`SplitClient.end_step`."""


def split_loss(
    logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None
) -> torch.Tensor:
    """Cross-entropy on hard or soft targets: the plain mean over rows, or the weighted
    mean (e.g. ADC's cluster sizes); the one loss of every step, on either side."""
    if weights is None:
        return F.cross_entropy(logits, targets)
    per_row = F.cross_entropy(logits, targets, reduction="none")
    return (per_row * weights).sum() / weights.sum()


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
        end: nn.Module | None = None,
    ) -> None:
        if head_update not in HEAD_UPDATES:
            raise ValueError(f"head_update must be one of {HEAD_UPDATES}, got {head_update!r}")
        self.head = head
        self.end = end
        """U-shape: the model's end (loss side), trained with the head by ``optimizer``."""
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
        with _seeded(seed):
            out = self.head(images)
        if plan is None:
            plan = self.compressor.make_plan(
                out.tokens.detach(), out.cls_attention, labels, generator or self.generator
            )
        encoded = self.compressor.encode(out.tokens, labels, plan)
        encoded.payload.wire = self.wire
        step = PendingStep(encoded, plan, int(images.shape[0]), key)
        if self.end is not None:  # U-shape: the labels stay here
            step.loss_fields = self.compressor.strip_loss_fields(encoded.payload)
        self.pending.append(step)
        return encoded.payload

    def end_step(self, output: Payload, *, seed: int | None = None) -> tuple[Payload, float]:
        """U-shape: the end's forward and backward on the server's output for the oldest
        pending step without one; returns the gradient w.r.t. that output and the loss.

        The end's parameter gradients wait in the pending step for :meth:`backward`, which
        steps head and end together (one optimizer step, as one model)."""
        if self.end is None:
            raise RuntimeError("end_step is for U-shaped split learning (a client with an end)")
        waiting = [p for p in self.pending if p.end_grads is None]
        if not waiting:
            raise RuntimeError("no pending step waits for the server's output")
        step = waiting[0]
        device = step.encoded.sent.device
        leaf = _received_output(output, self.compressor).to(device).requires_grad_(True)
        targets, weights = self.compressor.loss_targets(step.loss_fields, leaf.shape[0], device)
        self.end.train()
        with _seeded(seed):
            logits = self.end(leaf)
        loss = split_loss(logits, targets, weights)
        params = [p for p in self.end.parameters() if p.requires_grad]
        grads = torch.autograd.grad(loss, [leaf, *params], allow_unused=True)
        step.end_grads = list(grads[1:])
        gradient = Payload().add("gradients", grads[0], Kind.GRADIENTS)
        gradient.wire = self.wire
        return gradient, float(loss.detach())

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
        if self.end is not None and any(p.end_grads is None for p in self.pending):
            raise RuntimeError("U-shape: a pending step has no end step yet (call end_step)")
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        params = [p for p in params if p.requires_grad]
        self.optimizer.zero_grad(set_to_none=True)
        if self.head_update == "stale":
            per_step = [
                torch.autograd.grad(step.encoded.sent, params, grad, allow_unused=True)
                for step, grad in zip(self.pending, decoded, strict=True)
            ]
            for step, step_grads in zip(self.pending, per_step, strict=True):
                for p, g in zip(params, step_grads, strict=True):
                    p.grad = g
                self._add_end_grads([step])
                self.optimizer.step()
        else:  # one head step on the mean gradient of the pending steps
            for step, grad in zip(self.pending, decoded, strict=True):
                torch.autograd.backward(step.encoded.sent, grad / len(decoded))
            self._add_end_grads(self.pending)
            self.optimizer.step()
        self.pending = []

    def _add_end_grads(self, steps: Sequence[PendingStep]) -> None:
        """U-shape: the end's parameter gradients, the mean over ``steps``."""
        if self.end is None:
            return
        params = [p for p in self.end.parameters() if p.requires_grad]
        for i, p in enumerate(params):
            grads = [s.end_grads[i] for s in steps if s.end_grads[i] is not None]  # type: ignore[index]
            if grads:
                p.grad = torch.stack(grads).sum(0) / len(steps)

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
        tail: nn.Module,
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
        self._middle: _MiddlePass | None = None

    def step(self, payload: Payload) -> tuple[Payload, StepMetrics]:
        """One tail step on a received payload; returns the gradient payload."""
        (gradient,), metrics = self.step_joint([payload])
        return gradient, metrics

    def step_joint(
        self, payloads: Sequence[Payload], *, with_gradients: bool = True
    ) -> tuple[list[Payload], StepMetrics]:
        """One tail step on several payloads at once (e.g. every client's payload of one
        exchange): their rows form one batch, the loss is its mean; each payload gets the
        gradient of what it sent. ``with_gradients=False`` (a frozen head: nothing goes
        back) encodes none and returns an empty list; the tail's step is the same."""
        self.tail.train()
        self.compressor.train()
        received = [self.compressor.receive(p, self.device) for p in payloads]
        logits = self.tail(torch.cat([r.server_input for r in received]))
        targets = torch.cat([r.targets for r in received])  # type: ignore[misc]
        weights = [r.weights for r in received]
        if any(w is None for w in weights) and not all(w is None for w in weights):
            raise PayloadError("some payloads carry loss weights and others do not")
        weight = None if weights[0] is None else torch.cat(weights)  # type: ignore[arg-type]
        loss = split_loss(logits, targets, weight)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        gradients: list[Payload] = []
        if not with_gradients:
            return gradients, StepMetrics(float(loss.detach()), int(logits.shape[0]))
        for r, payload in zip(received, payloads, strict=True):
            gradient = self.compressor.encode_gradient(r.leaf.grad, payload)
            gradient.wire = self.wire
            gradients.append(gradient)
        return gradients, StepMetrics(float(loss.detach()), int(logits.shape[0]))

    # ------------------------------------------------------------------ U-shape
    def forward_middle(self, payloads: Sequence[Payload]) -> list[Payload]:
        """U-shape, first half of a step: the middle blocks on every payload (no labels) as
        one batch; returns each payload's output. The graph waits for
        :meth:`backward_middle`. Only the class token row travels back when the client's
        end reads nothing else (``tail.end_reads_class_token_only``)."""
        self.tail.train()
        self.compressor.train()
        received = [self.compressor.receive(p, self.device, labeled=False) for p in payloads]
        out = self.tail.middle(torch.cat([r.server_input for r in received]))
        rows = [int(r.server_input.shape[0]) for r in received]
        tokens = 1 if self.tail.end_reads_class_token_only else out.shape[1]
        self._middle = _MiddlePass(list(payloads), received, out, rows, tokens)
        outputs = []
        for chunk in out.detach().split(rows):
            output = Payload().add("outputs", chunk[:, :tokens], Kind.ACTIVATIONS)
            output.wire = self.wire
            outputs.append(output)
        return outputs

    def output_shape(self, index: int) -> tuple[int, ...]:
        """Shape of the output sent for payload ``index`` of the pending middle pass."""
        if self._middle is None:
            raise RuntimeError("no middle pass is pending: call forward_middle first")
        m = self._middle
        return (m.rows[index], m.tokens, m.out.shape[2])

    def backward_middle(self, gradients: Sequence[Payload | None]) -> list[Payload | None]:
        """U-shape, second half: one middle step on the clients' gradients w.r.t. their
        outputs; returns each payload's gradient w.r.t. what it sent (None where the client
        sent no gradient: it dropped out, its rows do not count).

        The step's loss is the row-weighted mean of the clients' losses,
        sum_c (rows_c / rows) L_c: with per-row mean losses this is the mean over all rows,
        as :meth:`step_joint` takes it. The server never sees it: each client's gradient
        arrives scaled by 1 (its own mean) and is weighted here."""
        m = self._middle
        if m is None:
            raise RuntimeError("no middle pass is pending: call forward_middle first")
        if len(gradients) != len(m.rows):
            raise ValueError(f"{len(m.rows)} outputs pending but {len(gradients)} gradients")
        present = [i for i, g in enumerate(gradients) if g is not None]
        total = sum(m.rows[i] for i in present)
        full = torch.zeros_like(m.out)
        starts = [sum(m.rows[:i]) for i in range(len(m.rows))]
        for i in present:
            grad = check_output_gradient(gradients[i], self.output_shape(i)).to(full.device)  # type: ignore[arg-type]
            full[starts[i] : starts[i] + m.rows[i], : m.tokens] = grad * (m.rows[i] / total)
        self.optimizer.zero_grad(set_to_none=True)
        if present:
            m.out.backward(full)
            self.optimizer.step()
        self._middle = None
        result: list[Payload | None] = []
        for i, (r, payload) in enumerate(zip(m.received, m.payloads, strict=True)):
            if i not in present:
                result.append(None)
                continue
            gradient = self.compressor.encode_gradient(r.leaf.grad, payload)
            gradient.wire = self.wire
            result.append(gradient)
        return result


@dataclass
class _MiddlePass:
    """The server's half-finished U-shaped step: inputs, the middle's output graph."""

    payloads: list[Payload]
    received: list[Received]
    out: torch.Tensor
    rows: list[int]
    tokens: int
    """Token rows sent back per sample (1: the class token only)."""


@contextlib.contextmanager
def _seeded(seed: int | None) -> Iterator[None]:
    """Fork the torch RNG and seed it (None: leave it alone), so dropout and drop-path draw
    the same masks whenever a step's forward is recomputed."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _received_output(payload: Payload, compressor: Compressor) -> torch.Tensor:
    """The server's middle output in a U-shaped step, checked: ``rows x k x d``, finite."""
    out = payload["outputs"].float()
    spec = compressor.spec
    if out.ndim != 3 or out.shape[2] != spec.dim or not 1 <= out.shape[1] <= spec.num_tokens:
        raise PayloadError(
            f"middle output must be rows x k x {spec.dim} with 1 <= k <= {spec.num_tokens}, "
            f"got {tuple(out.shape)}"
        )
    if not bool(torch.isfinite(out).all()):
        raise PayloadError("middle output contains NaN or Inf")
    return out.detach()


def check_output_gradient(payload: Payload, shape: tuple[int, ...]) -> torch.Tensor:
    """A U-shaped client's gradient w.r.t. the output it was sent: one tensor, the
    output's shape, finite (raises :class:`PayloadError`). The server's reply validation
    and :meth:`SplitServer.backward_middle` both use it."""
    if set(payload.tensors) != {"gradients"}:
        raise PayloadError(f"unexpected tensors {sorted(payload.tensors)}")
    grad = payload["gradients"].float()
    if tuple(grad.shape) != tuple(shape):
        raise PayloadError(
            f"gradient of shape {tuple(grad.shape)} for an output of shape {tuple(shape)}"
        )
    if not bool(torch.isfinite(grad).all()):
        raise PayloadError("gradient contains NaN or Inf")
    return grad
