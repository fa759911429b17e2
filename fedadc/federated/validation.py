"""The server's gate for client replies: nothing hostile or broken reaches the tail.

Before the tail trains on any payload of a reply, :class:`ReplyValidator` checks the whole
reply: the partition it claims, the number of payloads asked for, each payload's size
(``federation.max_payload_bytes``), that it decodes, and what the method expects of it
(:meth:`fedadc.compression.Compressor.validate_payload`: tensor names and dtypes, shapes
with at most the model's token count and the batch size in rows, finite values, labels in
``[0, num_classes)`` or soft-label rows that are non-negative and sum to 1). A head upload
must have the global head's tensor names, shapes and dtypes and finite values, and the
sample count that weights FedAvg must be possible.

A reply that passes comes back as a :class:`CheckedReply` holding its decoded payloads, so
the server decodes each payload once. A reply that fails raises :class:`RejectedPayload`
naming the client and the problem; the round loop logs it and drops the client from the
round like a crashed one (``docs/faults.md``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from fedadc.compression.base import Compressor
from fedadc.model.spec import TokenSpec
from fedadc.wire.messages import FromClient, ToClient
from fedadc.wire.payload import Payload, PayloadError

HEADER_SLACK = 64 * 1024
"""Bytes allowed on top of the tensor data for safetensors headers and metadata."""


class RejectedPayload(Exception):
    """A client's reply failed validation; it is dropped from the round."""

    def __init__(self, client: int, reason: str) -> None:
        self.client = client
        self.reason = reason
        super().__init__(f"client {client}: payload rejected: {reason}")


def default_max_payload_bytes(spec: TokenSpec, batch_size: int) -> int:
    """Twice the uncompressed ``B x n x d`` float32 payload, plus float64 soft labels for
    every sample and 64 KiB of header: no method sends more than that in one step."""
    return (
        2 * spec.uncompressed_bytes(batch_size) + 8 * batch_size * spec.num_classes + HEADER_SLACK
    )


@dataclass
class CheckedReply:
    """A reply that passed validation, its payloads decoded once for the tail to train on."""

    message: FromClient
    payloads: list[Payload] = field(default_factory=list)
    """The step payloads of ``message``, decoded, in step order."""
    head: Payload | None = None
    """The decoded head upload, on the round's last message."""
    output_gradients: list[Payload] = field(default_factory=list)
    """U-shape: the decoded gradients w.r.t. the middle's outputs (checked by the server,
    which knows the outputs' shapes)."""


class ReplyValidator:
    """Checks every reply of a round against the run's method, batch size and global head."""

    def __init__(
        self,
        compressor: Compressor,
        global_head: bytes,
        *,
        batch_size: int,
        max_examples: int,
        max_payload_bytes: int,
        labeled: bool = True,
        head_upload: bool = True,
    ) -> None:
        self.compressor = compressor
        self.labeled = labeled
        """False in U-shape: payloads must carry no labels (nor any loss field)."""
        self.head_upload = head_upload
        """False for a frozen head: the round's last reply carries no head."""
        self.batch_size = batch_size
        self.max_examples = max_examples
        self.max_payload_bytes = max_payload_bytes
        head = Payload.from_bytes(global_head)
        self.head_layout = {name: (t.shape, t.dtype) for name, t in head.tensors.items()}
        self.max_head_bytes = 2 * len(global_head) + HEADER_SLACK

    def check(self, client: int, message: ToClient, reply: FromClient) -> CheckedReply:
        """The decoded ``reply``; :class:`RejectedPayload` unless it soundly answers
        ``message``."""
        try:
            return self._check(client, message, reply)
        except PayloadError as err:
            raise RejectedPayload(client, str(err)) from err

    def _check(self, client: int, message: ToClient, reply: FromClient) -> CheckedReply:
        if reply.partition != client:
            raise PayloadError(f"reply claims partition {reply.partition}")
        if len(reply.payloads) != message.num_steps:
            raise PayloadError(
                f"{len(reply.payloads)} payloads in reply to a request for {message.num_steps}"
            )
        if len(reply.output_gradients) != len(message.outputs):
            raise PayloadError(
                f"{len(reply.output_gradients)} output gradients in reply to "
                f"{len(message.outputs)} outputs"
            )
        checked = CheckedReply(reply)
        for offset, data in enumerate(reply.payloads):
            step = message.first_step + offset
            if len(data) > self.max_payload_bytes:
                raise PayloadError(
                    f"step {step}: payload of {len(data)} bytes exceeds "
                    f"federation.max_payload_bytes={self.max_payload_bytes}"
                )
            try:
                checked.payloads.append(self._check_payload(Payload.from_bytes(data)))
            except PayloadError as err:
                raise PayloadError(f"step {step}: {err}") from None
        if message.finish and self.head_upload:
            checked.head = self._check_head(reply)
        elif reply.head is not None:
            raise PayloadError(
                "head upload before the round's last message"
                if self.head_upload
                else "head upload from a frozen head (model.head_trainable=false)"
            )
        return checked

    def _check_payload(self, payload: Payload) -> Payload:
        self.compressor.validate_payload(payload, self.batch_size, labeled=self.labeled)
        batch = payload.batch_size
        if batch is not None and not 1 <= batch <= self.batch_size:
            raise PayloadError(
                f"meta batch_size {batch} outside [1, {self.batch_size}] (federation.batch_size)"
            )
        return payload

    def _check_head(self, reply: FromClient) -> Payload:
        if reply.head is None:
            raise PayloadError("no head upload in reply to the round's last message")
        if len(reply.head) > self.max_head_bytes:
            raise PayloadError(
                f"head upload of {len(reply.head)} bytes exceeds {self.max_head_bytes} "
                "(twice the global head plus headers)"
            )
        head = Payload.from_bytes(reply.head)
        if set(head.tensors) != set(self.head_layout):
            missing = sorted(set(self.head_layout) - set(head.tensors))
            extra = sorted(set(head.tensors) - set(self.head_layout))
            raise PayloadError(f"head upload tensors differ: missing {missing}, unexpected {extra}")
        for name, tensor in head.tensors.items():
            shape, dtype = self.head_layout[name]
            if tensor.shape != shape or tensor.dtype != dtype:
                raise PayloadError(
                    f"head tensor {name!r} is {tensor.dtype} {tuple(tensor.shape)}, "
                    f"expected {dtype} {tuple(shape)}"
                )
            if tensor.dtype.is_floating_point and not bool(torch.isfinite(tensor).all()):
                raise PayloadError(f"head tensor {name!r} contains NaN or Inf")
        if not 1 <= reply.num_examples <= self.max_examples:
            raise PayloadError(
                f"num_examples={reply.num_examples} outside [1, {self.max_examples}] "
                "(local_steps x batch_size)"
            )
        return head
