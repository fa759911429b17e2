"""The server's side: the shared tail, the global head, the byte ledger, evaluation."""

from __future__ import annotations

import logging

import torch

from fedadc.config.schema import RunConfig
from fedadc.data.tensors import ImageData
from fedadc.federated.build import build_split, client_modules, load_weights, weights_payload
from fedadc.federated.messages import FromClient, ToClient
from fedadc.federated.validation import ReplyValidator
from fedadc.train.evaluate import EvalResult, evaluate
from fedadc.train.roles import SplitServer
from fedadc.wire.ledger import Ledger
from fedadc.wire.payload import Kind, Payload, WireFormat

log = logging.getLogger("fedadc")


class FederatedServer:
    """Owns the tail (and the server side of the codec) and the global head weights.

    Every byte that crosses the wire passes through :meth:`send` or :meth:`received`, so
    the ledger is complete: head downloads and uploads (``weights``), payloads, gradients.
    """

    def __init__(self, run: RunConfig, data: ImageData, ledger: Ledger | None = None) -> None:
        self.run = run
        self.data = data
        self.ledger = ledger or Ledger(
            WireFormat(run.wire.soft_label_dtype, run.wire.hard_label_dtype)
        )
        self.split, self.compressor = build_split(run, data)
        self.spec = self.split.spec
        self.client_side = client_modules(self.split, self.compressor)
        params = [*self.split.tail.parameters(), *self.compressor.decoder.parameters()]
        optimizer = torch.optim.Adam(
            params, lr=run.learning_rate, weight_decay=run.optim.weight_decay
        )
        self.tail_step = SplitServer(self.split.tail, self.compressor, optimizer, run.device)
        self.global_head = weights_payload(self.client_side).to_bytes()
        self.losses: list[float] = []
        self.validator = ReplyValidator(run, self.spec, self.compressor, self.global_head)

    # ---------------------------------------------------------------- validation
    def validate(self, pid: int, message: ToClient, reply: FromClient) -> None:
        """Raise :class:`~fedadc.federated.validation.RejectedPayload` unless ``reply`` is
        safe to train on (before the tail sees any of its payloads)."""
        self.validator.check(pid, message, reply)

    # ---------------------------------------------------------------- accounting
    def send(self, messages: dict[int, ToClient], round_: int) -> dict[int, ToClient]:
        """Record the bytes of outgoing head downloads (gradients are recorded when made)."""
        for pid, msg in messages.items():
            if msg.head is not None:
                self._record(msg.head, "down", pid, round_, msg.first_step)
        return messages

    def received(self, replies: dict[int, FromClient], round_: int, step: int) -> None:
        """Record the bytes of incoming replies (payloads are recorded when trained on)."""
        for pid, reply in sorted(replies.items()):
            if reply.head is not None:
                self._record(reply.head, "up", pid, round_, step)

    def _record(
        self,
        data: bytes,
        direction: str,
        pid: int,
        round_: int,
        step: int,
        baseline: int = 0,
        nominal: float | None = None,
    ) -> Payload:
        payload = Payload.from_bytes(data)
        self.ledger.record_bytes(
            payload,
            len(data),
            direction=direction,
            client=pid,
            round=round_,
            step=step,
            baseline_bytes=baseline,
            nominal_xi=nominal,
        )
        return payload

    # ---------------------------------------------------------------- training
    def train_on(
        self, replies: dict[int, FromClient], round_: int, first_step: int
    ) -> dict[int, list[bytes]]:
        """Run the tail on every payload, clients in partition order, steps in order."""
        gradients: dict[int, list[bytes]] = {}
        for pid in sorted(replies):
            gradients[pid] = []
            for offset, data in enumerate(replies[pid].payloads):
                payload = Payload.from_bytes(data)
                batch = _batch_size(payload, self.compressor)
                self.ledger.record_bytes(
                    payload,
                    len(data),
                    direction="up",
                    client=pid,
                    round=round_,
                    step=first_step + offset,
                    baseline_bytes=self.spec.uncompressed_bytes(batch),
                    nominal_xi=self.compressor.nominal_xi(batch),
                )
                grad, metrics = self.tail_step.step(payload)
                self.losses.append(metrics.loss)
                gradients[pid].append(
                    self.ledger.transmit(
                        grad, direction="down", client=pid, round=round_, step=first_step + offset
                    )
                )
        return gradients

    # ---------------------------------------------------------------- heads
    def fedavg(self, replies: dict[int, FromClient]) -> None:
        """Average the uploaded heads, weighted by the samples each trained on."""
        total = sum(r.num_examples for r in replies.values())
        if total == 0:
            raise RuntimeError("no client reported trained samples; nothing to aggregate")
        avg: dict[str, torch.Tensor] = {}
        for _, reply in sorted(replies.items()):  # fixed order: float sums are not associative
            weights = Payload.from_bytes(reply.head)
            w = reply.num_examples / total
            for name, tensor in weights.tensors.items():
                avg[name] = avg.get(name, 0) + w * tensor.double()
        self.set_global_head({k: v.float() for k, v in avg.items()})

    def set_global_head(self, state: dict[str, torch.Tensor] | bytes) -> None:
        if isinstance(state, bytes):
            self.global_head = state
            return
        payload = Payload()
        for name, tensor in state.items():
            payload.add(name, tensor, Kind.WEIGHTS)
        self.global_head = payload.to_bytes()

    # ---------------------------------------------------------------- evaluation
    def evaluate(self) -> EvalResult:
        """The paper's protocol: the global head + tail, uncompressed, on the test split
        (through the codec for methods whose codec is part of the model, or if asked)."""
        load_weights(self.client_side, Payload.from_bytes(self.global_head))
        through = self.run.evaluate_compressed
        if through is None:
            through = self.compressor.compress_at_eval
        return evaluate(
            self.split.head,
            self.split.tail,
            self.data.test,
            compressor=self.compressor if through else None,
            device=self.run.device,
        )

    def budget_bytes(self) -> float | None:
        epochs = self.run.federation.budget_epochs
        if epochs is None:
            return None
        return 2 * epochs * len(self.data.train) * self.spec.uncompressed_bytes(1)

    def head_cost(self, num_clients: int) -> int:
        """Budget cost of moving the head one way for ``num_clients`` clients."""
        if self.run.federation.budget_scope != "all":
            return 0
        return len(self.global_head) * num_clients

    def spent(self) -> int:
        if self.run.federation.budget_scope == "all":
            return self.ledger.total_bytes()
        return self.ledger.total_bytes("up", Kind.ACTIVATIONS) + self.ledger.total_bytes(
            "down", Kind.GRADIENTS
        )


def _batch_size(payload: Payload, compressor) -> int:
    """The client batch B behind a payload (ADC sends T merged samples; B is in meta)."""
    if "batch_size" in payload.meta:
        return int(payload.meta["batch_size"])
    return int(payload["labels"].shape[0])
