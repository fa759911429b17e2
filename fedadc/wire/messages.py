"""What the server and a client say to each other in one round, transport-free.

Binary parts are already-serialized :class:`~fedadc.wire.Payload` bytes, so every
transport (a function call, Flower messages) carries the same bytes the ledger counted.
One round trip per step: the server's message for step t+1 carries the gradient of step t
and the client's reply carries the payload of step t+1. U-shape adds a second round trip
per step: the server sends the middle's output, the client replies with its gradient.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ToClient:
    round: int
    first_step: int
    """Index (within the round) of the first payload requested."""
    num_steps: int
    """How many payloads to send back (0: none, e.g. when finishing)."""
    gradients: list[bytes] = field(default_factory=list)
    """Gradients for the client's pending steps, in step order."""
    head: bytes | None = None
    """Weights of head (+ client-side codec) at the start of a round."""
    finish: bool = False
    """After applying the gradients, upload the head."""
    outputs: list[bytes] = field(default_factory=list)
    """U-shape: the middle blocks' outputs for the client's pending steps, in step order;
    the client answers with their gradients (:attr:`FromClient.output_gradients`)."""


@dataclass
class FromClient:
    partition: int
    payloads: list[bytes] = field(default_factory=list)
    head: bytes | None = None
    num_examples: int = 0
    """Samples trained on this round (weights FedAvg)."""
    output_gradients: list[bytes] = field(default_factory=list)
    """U-shape: the gradient w.r.t. each output of :attr:`ToClient.outputs`."""
    compute_s: float = 0.0
    """Seconds the client computed on the message (restore, backward, forwards, encode,
    save), on its own clock; the server splits an exchange's time with it
    (``fedadc.federated.timing``). Never read by training."""
