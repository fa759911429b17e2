"""The interface every compression method implements, on both sides of the split.

A step of split learning with a compressor ``c`` (client left, server right)::

    client: plan = c.make_plan(tokens, cls_attention, labels, generator)  # no_grad
    client: enc = c.encode(tokens, labels, plan)    # enc.sent: differentiable in tokens
    client -> server: enc.payload.to_bytes()
    server: rec = c.receive(payload)                # rec.leaf requires grad
    server: loss(tail(rec.server_input), rec.targets).backward()
    server -> client: c.encode_gradient(rec.leaf.grad, payload).to_bytes()
    client: torch.autograd.backward(enc.sent, c.decode_gradient(grad_payload))

The gradient that travels back is the gradient with respect to exactly what was received
(``rec.leaf`` has the shape of ``enc.sent``), so it is as compressed as the forward payload.
Parameters that live on the client (e.g. BottleNet++'s encoder) are under ``encoder``;
those on the server under ``decoder``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from fedadc.model.spec import TokenSpec
from fedadc.wire.payload import Kind, Payload, PayloadError, WireFormat

Plan = dict[str, torch.Tensor]
"""Per-step random or data-dependent choices of a method (cluster ids, kept indices, ...).

A plan is computed once under ``no_grad`` and is enough to recompute the step's payload
bit for bit from the same batch: a stateless client can redo step t from it."""


@dataclass
class Encoded:
    """Client side result of :meth:`Compressor.encode`."""

    payload: Payload
    sent: torch.Tensor
    """The differentiable tensor whose gradient the server sends back."""


@dataclass
class Received:
    """Server side result of :meth:`Compressor.receive`."""

    leaf: torch.Tensor
    """Leaf tensor (requires grad) rebuilt from the payload; its ``.grad`` goes back."""
    server_input: torch.Tensor
    """Tokens for the server tail, ``B' x n' x d``."""
    targets: torch.Tensor | None
    """Hard labels (``B'``, int64) or soft labels (``B' x C``, float32); None for a
    U-shaped payload (the labels stayed on the client)."""
    weights: torch.Tensor | None = None
    """Per-row loss weights (``B'``), e.g. ADC's cluster sizes; None: the plain mean."""


class Compressor(nn.Module):
    """Base class: float32 activations and gradients, hard labels, no plan.

    Subclasses override what differs. Class attributes:

    * ``name``: registry name.
    * ``merges_samples``: the server sees fewer samples than the client batch (ADC).
    * ``compress_at_eval``: the headline test accuracy is the split path's (through
      :meth:`eval_forward`; BottleNet++, whose learned codec is part of the model); for
      the others it is the uncompressed model's, the paper's protocol. Both are recorded.
    """

    name: ClassVar[str] = "base"
    merges_samples: ClassVar[bool] = False
    compress_at_eval: ClassVar[bool] = False
    ratio_params: ClassVar[dict[str, str]] = {}  # ratio parameter -> its tag in run names

    def __init__(self, spec: TokenSpec) -> None:
        super().__init__()
        self.spec = spec
        self.encoder = nn.Module()
        self.decoder = nn.Module()

    def nominal_xi(self, batch_size: int) -> float:
        """The method's compression ratio as the paper states it (activations only)."""
        raise NotImplementedError

    # ---------------------------------------------------------------- client side
    def make_plan(
        self,
        tokens: torch.Tensor,
        cls_attention: torch.Tensor | None,
        labels: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> Plan:
        """Choices for this step, made without gradients. Default: nothing to choose."""
        return {}

    def encode(self, tokens: torch.Tensor, labels: torch.Tensor, plan: Plan) -> Encoded:
        """Compress a batch ``B x n x d`` and its labels into a payload."""
        self.check_batch(tokens, labels)
        sent = self.encoder_forward(tokens, plan)
        payload = Payload().add("activations", sent, Kind.ACTIVATIONS)
        payload.add("labels", labels, Kind.LABELS)
        self.add_extras(payload, tokens, plan)
        return Encoded(payload=payload, sent=sent)

    def encoder_forward(self, tokens: torch.Tensor, plan: Plan) -> torch.Tensor:
        """The differentiable client-side transform; default identity."""
        return tokens

    def add_extras(self, payload: Payload, tokens: torch.Tensor, plan: Plan) -> None:
        """Add what the server needs besides activations and labels (indices, sizes)."""

    def decode_gradient(self, payload: Payload) -> torch.Tensor:
        """Gradient for ``Encoded.sent`` from the server's reply."""
        return payload["gradients"].float()

    # ---------------------------------------------------------------- server side
    def receive(
        self, payload: Payload, device: torch.device | str | None = None, *, labeled: bool = True
    ) -> Received:
        """Rebuild the server input and (``labeled``) targets from a payload, on ``device``.

        ``labeled=False``: a U-shaped payload, whose loss fields stayed on the client
        (:meth:`loss_fields`); ``targets`` is then None. Raises :class:`PayloadError` for
        non-finite values or labels that do not fit.
        """
        leaf = self.received_leaf(payload)
        if not torch.isfinite(leaf).all():
            raise PayloadError("received activations contain NaN or Inf")
        leaf = leaf.to(device).detach().requires_grad_(True)
        server_input = self.decoder_forward(leaf, payload)
        if not labeled:
            return Received(leaf=leaf, server_input=server_input, targets=None)
        targets, weights = self.loss_targets(payload, server_input.shape[0], device)
        return Received(leaf, server_input, targets, weights)

    def loss_fields(self) -> tuple[str, ...]:
        """The payload tensors only the loss reads. Standard split learning sends them to
        the server; U-shape keeps them on the client (:meth:`strip_loss_fields`)."""
        return ("labels",)

    def loss_targets(
        self, fields: Payload, rows: int, device: torch.device | str | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(targets, per-row loss weights or None) from the loss fields of a payload, for
        ``rows`` samples; the same function on the server (standard) and client (U-shape)."""
        targets = fields["labels"]
        self.check_targets(targets, rows)
        return targets.to(device), None

    def strip_loss_fields(self, payload: Payload) -> Payload:
        """Move the loss fields out of ``payload`` (which then holds only what the server
        needs) into a new payload that stays on the client."""
        kept = Payload(batch_size=payload.batch_size)
        for name in self.loss_fields():
            kept.add(name, payload.tensors.pop(name), payload.kinds.pop(name))
        return kept

    def received_leaf(self, payload: Payload) -> torch.Tensor:
        """The payload's activations as float32 ``B' x n' x d`` (``1 <= n' <= n``)."""
        leaf = payload["activations"]
        spec = self.spec
        if leaf.ndim != 3 or leaf.shape[2] != spec.dim or not 1 <= leaf.shape[1] <= spec.num_tokens:
            raise PayloadError(
                f"{self.name} activations must be B x k x {spec.dim} with "
                f"1 <= k <= {spec.num_tokens} tokens, got {tuple(leaf.shape)}"
            )
        return leaf.float()

    def decoder_forward(self, leaf: torch.Tensor, payload: Payload) -> torch.Tensor:
        """The differentiable server-side transform; default identity."""
        return leaf

    def encode_gradient(self, grad: torch.Tensor, payload: Payload) -> Payload:
        """Payload of the gradient w.r.t. the received leaf; default float32."""
        return Payload().add("gradients", grad, Kind.GRADIENTS)

    # ---------------------------------------------------------------- validation
    def expected_tensors(self) -> dict[str, str]:
        """Tensor names of a forward payload and the dtype class each must have:
        ``float``, ``int`` (any integer), ``uint8`` or ``label`` (integer class ids or
        float soft labels). Override when a method sends something else."""
        return {"activations": "float", "labels": "label"}

    def num_samples(self, payload: Payload, leaf: torch.Tensor) -> int:
        """How many samples (label rows) the server trains on from ``payload``."""
        return int(leaf.shape[0])

    def validate_payload(self, payload: Payload, max_samples: int, *, labeled: bool = True) -> None:
        """Check a received forward payload before the tail trains on it.

        Names and dtypes (:meth:`expected_tensors`), the method's shapes (its
        :meth:`received_leaf`), finite values, at most ``max_samples`` rows (the client
        batch size) and labels that fit (:meth:`check_targets`). Raises
        :class:`PayloadError` naming the problem; never touches parameters.
        """
        expected = self.expected_tensors()
        if not labeled:  # U-shape: the loss fields must not travel
            expected = {k: v for k, v in expected.items() if k not in self.loss_fields()}
        if set(payload.tensors) != set(expected):
            raise PayloadError(
                f"{self.name} payload must hold tensors {sorted(expected)}, "
                f"got {sorted(payload.tensors)}"
            )
        for name, want in expected.items():
            dtype = payload.tensors[name].dtype
            if not _dtype_matches(dtype, want):
                raise PayloadError(f"{self.name} payload {name!r} must be {want}, got {dtype}")
        leaf = self.received_leaf(payload)
        if not torch.isfinite(leaf).all():
            raise PayloadError("activations contain NaN or Inf")
        samples = self.num_samples(payload, leaf)
        if not 1 <= leaf.shape[0] <= max_samples or not 1 <= samples <= max_samples:
            raise PayloadError(
                f"payload has {leaf.shape[0]} rows for {samples} samples; the batch size "
                f"allows 1 to {max_samples}"
            )
        if labeled:
            self.loss_targets(payload, samples)

    def eval_forward(
        self,
        tokens: torch.Tensor,
        cls_attention: torch.Tensor | None = None,
        wire: WireFormat | None = None,
    ) -> torch.Tensor:
        """Tokens as the tail sees them at inference through the split path (deployed).

        Per-sample methods round-trip encode/decode with their default plan (no generator:
        a fixed one). With ``wire`` the payload travels as bytes in that format (its
        activation precision included), as it would when deployed. A method that merges
        samples must override this to say what its per-sample inference is (ADC does);
        the base refuses, since a merged sample has no per-sample prediction.
        """
        if self.merges_samples:
            raise ValueError(
                f"method {self.name!r} merges samples and does not define its inference "
                "through the split path; override Compressor.eval_forward (per-sample "
                "inference, as ADC does) to evaluate it through the compressor"
            )
        labels = torch.zeros(tokens.shape[0], dtype=torch.long, device=tokens.device)
        plan = self.make_plan(tokens, cls_attention, labels, None)
        return self.eval_decode(self.encode(tokens, labels, plan).payload, tokens.device, wire)

    def eval_decode(
        self, payload: Payload, device: torch.device | str, wire: WireFormat | None = None
    ) -> torch.Tensor:
        """The server half of :meth:`eval_forward`: ``payload`` (through the bytes of
        ``wire`` when given) decoded to the tail's input on ``device``."""
        if wire is not None:
            payload = Payload.from_bytes(payload.to_bytes(wire))
        return self.decoder_forward(self.received_leaf(payload).to(device), payload)

    def check_batch(self, tokens: torch.Tensor, labels: torch.Tensor) -> None:
        spec = self.spec
        if tokens.ndim != 3 or tokens.shape[1:] != (spec.num_tokens, spec.dim):
            raise ValueError(
                f"tokens must be B x {spec.num_tokens} x {spec.dim} for this compressor, "
                f"got {tuple(tokens.shape)}; build it with the TokenSpec of the model's split"
            )
        if labels.shape != (tokens.shape[0],):
            raise ValueError(
                f"labels must have shape ({tokens.shape[0]},) to match the batch, "
                f"got {tuple(labels.shape)}"
            )
        check_label_range(labels, spec.num_classes)

    def check_targets(self, targets: torch.Tensor, num_samples: int) -> None:
        if targets.shape[0] != num_samples:
            raise PayloadError(f"payload has {targets.shape[0]} labels for {num_samples} samples")
        if targets.dtype.is_floating_point:
            if targets.ndim != 2 or targets.shape[1] != self.spec.num_classes:
                raise PayloadError(
                    f"soft labels must be {num_samples} x {self.spec.num_classes}, "
                    f"got {tuple(targets.shape)}"
                )
            if not torch.isfinite(targets).all():
                raise PayloadError("soft labels contain NaN or Inf")
            sums = targets.double().sum(dim=1)
            if bool((targets < 0).any()) or not torch.allclose(
                sums, torch.ones_like(sums), atol=SOFT_LABEL_TOLERANCE, rtol=0
            ):
                raise PayloadError(
                    "soft labels must be non-negative rows summing to 1, got rows summing to "
                    f"[{float(sums.min()):.4g}, {float(sums.max()):.4g}] with minimum "
                    f"{float(targets.min()):.4g}"
                )
        else:
            if targets.ndim != 1:
                raise PayloadError(
                    f"hard labels must be a vector of {num_samples} class ids, "
                    f"got shape {tuple(targets.shape)}"
                )
            check_label_range(targets, self.spec.num_classes, error=PayloadError)


SOFT_LABEL_TOLERANCE = 1e-2
"""How far a soft-label row may sum from 1 (float16 on the wire rounds each entry)."""

_INTEGER_DTYPES = (
    torch.uint8,
    torch.uint16,
    torch.uint32,
    torch.uint64,
    torch.int8,
    torch.int16,
    torch.int32,
    torch.int64,
)


def _dtype_matches(dtype: torch.dtype, want: str) -> bool:
    if want == "float":
        return dtype.is_floating_point
    if want == "int":
        return dtype in _INTEGER_DTYPES
    if want == "uint8":
        return dtype == torch.uint8
    if want == "label":
        return dtype.is_floating_point or dtype in _INTEGER_DTYPES
    raise ValueError(f"unknown dtype class {want!r}")


def check_label_range(
    labels: torch.Tensor, num_classes: int, error: type[Exception] = ValueError
) -> None:
    if labels.dtype.is_floating_point:
        raise error(f"labels must be integer class ids, got dtype {labels.dtype}")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise error(
            f"labels must lie in [0, {num_classes - 1}] (num_classes={num_classes}), "
            f"got values in [{int(labels.min())}, {int(labels.max())}]; "
            "set num_classes to the dataset's class count"
        )
