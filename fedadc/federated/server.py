"""The server's side: the shared tail, the global head, the byte ledger, evaluation."""

from __future__ import annotations

from typing import Any

import torch

from fedadc.config.schema import RunConfig
from fedadc.data.tensors import ImageData
from fedadc.evaluation import Evaluation, evaluate_both
from fedadc.federated.build import build_split, client_modules, load_weights, weights_payload
from fedadc.federated.validation import (
    CheckedReply,
    RejectedPayload,
    ReplyValidator,
    default_max_payload_bytes,
)
from fedadc.model.ushape import UShapeTail
from fedadc.schedule import set_lr
from fedadc.step import SplitServer, check_output_gradient
from fedadc.wire.ledger import Ledger
from fedadc.wire.messages import FromClient, ToClient
from fedadc.wire.payload import Kind, Payload, PayloadError, WireFormat


class FederatedServer:
    """Owns the tail (and the server side of the codec) and the global head weights.

    Every byte that crosses the wire passes through :meth:`send`, :meth:`received` or
    :meth:`train_on`, so the ledger is complete: head downloads and uploads (``weights``),
    payloads, gradients. It records the bytes as they were serialized by their encoder.
    """

    def __init__(self, run: RunConfig, data: ImageData, ledger: Ledger | None = None) -> None:
        self.run = run
        self.data = data
        self.ledger = ledger or Ledger()
        self.split, self.compressor = build_split(run, data)
        self.spec = self.split.spec
        self.client_side = client_modules(self.split, self.compressor)
        self.u_shape = isinstance(self.split.tail, UShapeTail)
        """U-shape: the server trains only the middle; the tail's end belongs to the clients."""
        server_part = self.split.tail.middle if self.u_shape else self.split.tail
        params = [*server_part.parameters(), *self.compressor.decoder.parameters()]
        optimizer = torch.optim.Adam(
            params, lr=run.learning_rate, weight_decay=run.optim.weight_decay
        )
        wire = WireFormat.from_config(run.wire)
        self.tail_step = SplitServer(
            self.split.tail, self.compressor, optimizer, run.device, wire=wire
        )
        self.global_head = weights_payload(self.client_side).to_bytes()
        self.head_frozen = not run.model.head_trainable
        """A frozen head streams payloads: no gradients back, no head upload, no FedAvg."""
        self.losses: list[float] = []
        self.head_velocity: dict[str, torch.Tensor] = {}
        fed = run.federation
        self.validator = ReplyValidator(
            self.compressor,
            self.global_head,
            batch_size=fed.batch_size,
            max_examples=fed.local_steps * fed.batch_size,
            max_payload_bytes=fed.max_payload_bytes
            if fed.max_payload_bytes is not None
            else default_max_payload_bytes(self.spec, fed.batch_size),
            labeled=not self.u_shape,
            head_upload=not self.head_frozen,
        )
        self._middle_clients: list[int] = []

    def validate(self, pid: int, message: ToClient, reply: FromClient) -> CheckedReply:
        """``reply`` decoded, or :class:`~fedadc.federated.validation.RejectedPayload` unless
        it is safe to train on (before the tail sees any of its payloads)."""
        checked = self.validator.check(pid, message, reply)
        if message.outputs:  # U-shape: gradients w.r.t. the outputs this client was sent
            index = self._middle_clients.index(pid)
            try:
                shape = self.tail_step.output_shape(index)
                checked.output_gradients = [Payload.from_bytes(d) for d in reply.output_gradients]
                for gradient in checked.output_gradients:
                    check_output_gradient(gradient, shape)
            except PayloadError as err:
                raise RejectedPayload(pid, f"output gradient: {err}") from err
        return checked

    def send(self, messages: dict[int, ToClient], round_: int) -> None:
        """Record the bytes of outgoing head downloads (gradients are recorded when made)."""
        for pid, msg in messages.items():
            if msg.head is not None:
                self.ledger.record(
                    msg.head, direction="down", client=pid, round=round_, step=msg.first_step
                )

    def received(self, replies: dict[int, CheckedReply], round_: int, step: int) -> None:
        """Record the bytes of incoming head uploads (payloads are recorded when trained on)."""
        for pid, reply in sorted(replies.items()):
            if reply.message.head is not None:
                self.ledger.record(
                    reply.message.head, direction="up", client=pid, round=round_, step=step
                )

    def train_on(
        self, replies: dict[int, CheckedReply], round_: int, first_step: int
    ) -> dict[int, list[bytes]]:
        """Run the tail on every payload: per client (``federation.tail_update=per_client``,
        clients in partition order, steps in order) or one step on all clients' payloads of
        each exchange step together (``joint``).

        A frozen head (``model.head_trainable=false``) gets no gradients (empty lists, none
        in the ledger), and its per-client steps go step by step (step t of every client in
        partition order, then t+1): the order S=1 gives, so S changes nothing."""
        gradients: dict[int, list[bytes]] = {}
        for pid in sorted(replies):
            gradients[pid] = []
        by_step = self._payloads_by_step(replies, round_, first_step)
        if self.run.federation.tail_update == "joint":  # one tail step per exchange step
            steps = [(offset, group) for offset, group in enumerate(by_step)]
        elif self.head_frozen:  # one tail step per payload, steps in order, then clients
            steps = [(offset, [item]) for offset, group in enumerate(by_step) for item in group]
        else:  # one tail step per payload: clients in partition order, steps in order
            steps = sorted(
                ((offset, [item]) for offset, group in enumerate(by_step) for item in group),
                key=lambda entry: entry[1][0][0],
            )
        for offset, group in steps:
            step = first_step + offset
            set_lr(self.tail_step.optimizer, self.run.lr_curve.at(round_, step))
            grads, metrics = self.tail_step.step_joint(
                [payload for _, payload in group], with_gradients=not self.head_frozen
            )
            self.losses.append(metrics.loss)
            if self.head_frozen:
                continue
            for (pid, _), grad in zip(group, grads, strict=True):
                gradients[pid].append(
                    self.ledger.transmit(
                        grad, direction="down", client=pid, round=round_, step=step
                    )
                )
        return gradients

    def forward_middle(
        self, replies: dict[int, CheckedReply], round_: int, step: int
    ) -> dict[int, list[bytes]]:
        """U-shape, first half of a step: the middle on every client's payload of this
        exchange as one batch (clients in partition order); returns each client's output,
        as recorded in the ledger."""
        (group,) = self._payloads_by_step(replies, round_, step)  # S = 1 in U-shape
        self._middle_clients = [pid for pid, _ in group]
        set_lr(self.tail_step.optimizer, self.run.lr_curve.at(round_, step))
        outputs = self.tail_step.forward_middle([payload for _, payload in group])
        return {
            pid: [
                self.ledger.transmit(output, direction="down", client=pid, round=round_, step=step)
            ]
            for pid, output in zip(self._middle_clients, outputs, strict=True)
        }

    def backward_middle(
        self, replies: dict[int, CheckedReply], round_: int, step: int
    ) -> dict[int, list[bytes]]:
        """U-shape, second half: one middle step on the output gradients that came back
        (a client without one dropped out: its rows do not count); returns each client's
        gradient w.r.t. what it sent, as recorded in the ledger."""
        grads: list[Payload | None] = []
        for pid in self._middle_clients:
            reply = replies.get(pid)
            if reply is None:
                grads.append(None)
                continue
            self.ledger.record(
                reply.message.output_gradients[0],
                direction="up",
                client=pid,
                round=round_,
                step=step,
            )
            grads.append(reply.output_gradients[0])
        back = self.tail_step.backward_middle(grads)  # no loss: it stays on the clients
        return {
            pid: [self.ledger.transmit(g, direction="down", client=pid, round=round_, step=step)]
            for pid, g in zip(self._middle_clients, back, strict=True)
            if g is not None
        }

    def _payloads_by_step(
        self, replies: dict[int, CheckedReply], round_: int, first_step: int
    ) -> list[list[tuple[int, Payload]]]:
        """Every reply's payloads grouped by step (clients in partition order within a
        step), each recorded in the ledger as it is taken in."""
        by_step: list[list[tuple[int, Payload]]] = []
        for pid in sorted(replies):
            sent = zip(replies[pid].message.payloads, replies[pid].payloads, strict=True)
            for offset, (data, payload) in enumerate(sent):
                batch = self._client_batch_size(payload)
                self.ledger.record(
                    data,
                    direction="up",
                    client=pid,
                    round=round_,
                    step=first_step + offset,
                    baseline_bytes=self.spec.uncompressed_bytes(batch),
                    nominal_xi=self.compressor.nominal_xi(batch),
                )
                while len(by_step) <= offset:
                    by_step.append([])
                by_step[offset].append((pid, payload))
        return by_step

    def _client_batch_size(self, payload: Payload) -> int:
        """The client batch B behind a payload: its typed batch size where the method sends
        one (ADC sends T merged samples), else one sample per row the method decodes (a
        U-shaped payload has no label rows to count)."""
        if payload.batch_size is not None:
            return payload.batch_size
        leaf = self.compressor.received_leaf(payload)
        return self.compressor.num_samples(payload, leaf)

    def fedavg(self, replies: dict[int, CheckedReply]) -> None:
        """Average the uploaded heads, weighted by the samples each trained on."""
        total = sum(r.message.num_examples for r in replies.values())
        if total == 0:
            raise RuntimeError("no client reported trained samples; nothing to aggregate")
        avg: dict[str, torch.Tensor] = {}
        for _, reply in sorted(replies.items()):  # fixed order: float sums are not associative
            weights = reply.head
            if weights is None:
                raise RuntimeError("fedavg needs every reply's head upload")
            w = reply.message.num_examples / total
            for name, tensor in weights.tensors.items():
                avg[name] = avg.get(name, 0) + w * tensor.double()
        momentum, lr = self.run.federation.head_momentum, self.run.federation.head_lr
        if momentum > 0 or lr != 1.0:  # FedAvgM: step along the momentum of (previous - average)
            previous = Payload.from_bytes(self.global_head).tensors
            for name, mean in avg.items():
                delta = previous[name].double() - mean
                buf = self.head_velocity.get(name) if momentum > 0 else None
                buf = delta if buf is None else momentum * buf + delta
                if momentum > 0:
                    self.head_velocity[name] = buf
                avg[name] = previous[name].double() - lr * buf
        self.set_global_head({k: v.float() for k, v in avg.items()})

    def set_global_head(self, state: dict[str, torch.Tensor] | bytes) -> None:
        if isinstance(state, bytes):
            self.global_head = state
            return
        payload = Payload()
        for name, tensor in state.items():
            payload.add(name, tensor, Kind.WEIGHTS)
        self.global_head = payload.to_bytes()

    def evaluate(self) -> Evaluation:
        """The global head + tail on the test split, both uncompressed (the paper's
        protocol) and through the split path (the compressor's inference round trip, in
        the run's wire format). The headline (``test_accuracy``) is the uncompressed one,
        or the split path's for methods whose codec is part of the model or if asked
        (``evaluate_compressed``)."""
        load_weights(self.client_side, Payload.from_bytes(self.global_head))
        return evaluate_both(
            self.split.head,
            self.split.tail,
            self.data.test,
            self.compressor,
            protocol=self.test_protocol,
            wire=self.tail_step.wire,
            device=self.run.device,
        )

    @property
    def test_protocol(self) -> str:
        """Which protocol ``test_accuracy`` reports: ``split`` or ``uncompressed``."""
        through = self.run.evaluate_compressed
        if through is None:
            through = self.compressor.compress_at_eval
        return "split" if through else "uncompressed"

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs of the server, as ``torch.save`` can store it."""
        return {
            "global_head": self.global_head,
            "tail": self.split.tail.state_dict(),
            "decoder": self.compressor.decoder.state_dict(),
            "tail_optimizer": self.tail_step.optimizer.state_dict(),
            "losses": list(self.losses),
            "ledger": self.ledger.state_dict(),
            "head_velocity": dict(self.head_velocity),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.set_global_head(state["global_head"])
        self.split.tail.load_state_dict(state["tail"])
        self.compressor.decoder.load_state_dict(state["decoder"])
        self.tail_step.optimizer.load_state_dict(state["tail_optimizer"])
        self.losses = list(state["losses"])
        self.ledger.load_state_dict(state["ledger"])
        self.head_velocity = dict(state.get("head_velocity", {}))

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
        # activations and gradients both ways (U-shape sends outputs down, gradients up)
        return self.ledger.total_bytes(kind=Kind.ACTIVATIONS) + self.ledger.total_bytes(
            kind=Kind.GRADIENTS
        )
