"""A client's side of federated split learning, correct in whichever process runs it.

Everything a client must remember between the messages of a round lives in ``state`` (a
mapping of bytes: Flower's ``context.state`` in the apps, a dict in-process): the head's
weights and optimizer state, and for each pending step its batch indices and ADC plan.
When a gradient arrives, the client recomputes that step's head forward from the stored
batch and plan (bit-identical) and backpropagates. A per-process cache of the live graph
skips the recompute when the same process handled the previous message and the state
version matches; it is an optimization only and never changes a result.

Clients are stateless across rounds: the head comes with the first message of a round,
the optimizer starts fresh, and the data position is derived from (round, step).
"""

from __future__ import annotations

import io
import json
import logging
import uuid
from collections.abc import MutableMapping
from dataclasses import dataclass, field

import torch

from fedadc.compression.base import Compressor, Encoded, Plan
from fedadc.config.schema import RunConfig
from fedadc.data.tensors import ImageSplit
from fedadc.federated.build import (
    build_split,
    client_data,
    client_modules,
    load_data,
    load_weights,
    weights_payload,
)
from fedadc.federated.messages import FromClient, ToClient
from fedadc.seeding import generator, stream_seed
from fedadc.wire.payload import Kind, Payload

log = logging.getLogger("fedadc")


@dataclass
class _Live:
    """In-process objects of one client, valid while ``version`` matches the state."""

    version: str
    modules: torch.nn.ModuleDict
    compressor: Compressor
    optimizer: torch.optim.Optimizer
    graphs: dict[int, Encoded] = field(default_factory=dict)


_LIVE: dict[tuple[str, int], _Live] = {}


class FederatedClient:
    """Handles one :class:`ToClient` message and returns the :class:`FromClient` reply."""

    def __init__(
        self,
        run: RunConfig,
        partition: int,
        state: MutableMapping[str, bytes],
        *,
        use_cache: bool = True,
    ) -> None:
        self.run = run
        self.partition = partition
        self.state = state
        self.use_cache = use_cache
        self.data: ImageSplit = client_data(run, partition)
        self._key = (repr(run), partition)

    # ---------------------------------------------------------------- message
    def handle(self, msg: ToClient) -> FromClient:
        live = self._restore(msg)
        meta = json.loads(self.state.get("meta", b"{}"))
        if msg.head is not None:
            meta = {"round": msg.round, "examples": 0, "pending": []}
        if msg.gradients:
            self._apply_gradients(live, meta, msg.gradients)
        payloads = []
        for i in range(msg.num_steps):
            data, num = self._forward(live, msg.round, msg.first_step + i)
            payloads.append(data)
            meta["pending"].append(msg.first_step + i)
            meta["examples"] += num
        reply = FromClient(partition=self.partition, payloads=payloads)
        if msg.finish:
            reply.head = weights_payload(live.modules).to_bytes()
            reply.num_examples = meta["examples"]
        self._save(live, meta)
        return reply

    # ---------------------------------------------------------------- steps
    def _global_step(self, round_: int, step: int) -> int:
        """Global step index of this client: the data position, derived, not stored."""
        return (round_ - 1) * self.run.federation.local_steps + step

    def _batch_indices(self, g: int) -> torch.Tensor:
        n, b = len(self.data), self.run.federation.batch_size
        per_epoch = n // b
        if per_epoch == 0:  # partition smaller than a batch: one batch of everything
            return torch.randperm(
                n, generator=generator(self.run.seed, f"data-{self.partition}-{g}")
            )
        epoch, pos = divmod(g, per_epoch)
        perm = torch.randperm(
            n, generator=generator(self.run.seed, f"data-{self.partition}-e{epoch}")
        )
        return perm[pos * b : (pos + 1) * b]

    def _encode(
        self, live: _Live, idx: torch.Tensor, g: int, plan: Plan | None
    ) -> tuple[Encoded, Plan]:
        device = torch.device(self.run.device)
        images, labels = self.data.batch(
            idx, stream_seed(self.run.seed, f"aug-{self.partition}-{g}")
        )
        images, labels = images.to(device), labels.to(device)
        head = live.modules["head"]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(stream_seed(self.run.seed, f"fwd-{self.partition}-{g}"))
            out = head(images)
        if plan is None:
            plan = live.compressor.make_plan(
                out.tokens.detach(),
                out.cls_attention,
                labels,
                generator(self.run.seed, f"plan-{self.partition}-{g}"),
            )
        return live.compressor.encode(out.tokens, labels, plan), plan

    def _forward(self, live: _Live, round_: int, step: int) -> tuple[bytes, int]:
        g = self._global_step(round_, step)
        idx = self._batch_indices(g)
        live.modules.train()
        live.compressor.train()
        with torch.set_grad_enabled(self.use_cache):
            enc, plan = self._encode(live, idx, g, None)
        pending = Payload(meta={"round": str(round_)})
        pending.add("batch", idx, Kind.INDICES)
        for key, tensor in plan.items():
            pending.add(f"plan.{key}", tensor, Kind.INDICES)
        self.state[f"pending.{step}"] = pending.to_bytes()
        if self.use_cache:
            live.graphs[step] = enc
        return enc.payload.to_bytes(), len(idx)

    def _apply_gradients(self, live: _Live, meta: dict, gradients: list[bytes]) -> None:
        steps = meta["pending"]
        if len(gradients) != len(steps):
            raise ValueError(
                f"client {self.partition} has {len(steps)} pending steps but received "
                f"{len(gradients)} gradients"
            )
        params = [p for p in live.modules.parameters() if p.requires_grad]
        stale = self.run.federation.head_update == "stale"
        grads_per_step: list[list[torch.Tensor | None]] = []
        live.optimizer.zero_grad(set_to_none=True)
        for step, data in zip(steps, gradients, strict=True):
            enc = live.graphs.pop(step, None) if self.use_cache else None
            if enc is None:
                enc = self._recompute(live, meta["round"], step)
            grad = live.compressor.decode_gradient(Payload.from_bytes(data)).to(enc.sent.device)
            if grad.shape != enc.sent.shape:
                raise ValueError(
                    f"gradient shape {tuple(grad.shape)} does not match the payload sent for "
                    f"step {step} {tuple(enc.sent.shape)}"
                )
            if stale:
                grads_per_step.append(
                    list(torch.autograd.grad(enc.sent, params, grad, allow_unused=True))
                )
            else:  # one head step on the mean gradient of the S steps
                torch.autograd.backward(enc.sent, grad / len(steps))
            self.state.pop(f"pending.{step}", None)
        if stale:
            for grads in grads_per_step:
                for p, g in zip(params, grads, strict=True):
                    p.grad = g
                live.optimizer.step()
        else:
            live.optimizer.step()
        meta["pending"] = []

    def _recompute(self, live: _Live, round_: int, step: int) -> Encoded:
        stored = Payload.from_bytes(self.state[f"pending.{step}"])
        plan = {
            name[len("plan.") :]: t.to(self.run.device)
            for name, t in stored.tensors.items()
            if name.startswith("plan.")
        }
        live.modules.train()
        live.compressor.train()
        enc, _ = self._encode(live, stored["batch"], self._global_step(round_, step), plan)
        return enc

    # ---------------------------------------------------------------- state
    def _restore(self, msg: ToClient) -> _Live:
        version = self.state.get("version", b"").decode()
        cached = _LIVE.get(self._key) if self.use_cache else None
        if msg.head is None and cached is not None and cached.version == version:
            return cached
        if cached is not None:  # reuse the built modules; their weights are replaced below
            modules, compressor = cached.modules, cached.compressor
        else:
            split, compressor = build_split(self.run, load_data(self.run))
            modules = client_modules(split, compressor)
        weights = msg.head if msg.head is not None else self.state.get("weights")
        if weights is None:
            raise ValueError(
                f"client {self.partition} got a step message without a round start: no head "
                "weights in its state (was the round started on another node?)"
            )
        load_weights(modules, Payload.from_bytes(weights))
        optimizer = torch.optim.Adam(
            modules.parameters(),
            lr=self.run.learning_rate,
            weight_decay=self.run.optim.weight_decay,
        )
        if msg.head is None and "optim" in self.state:
            optimizer.load_state_dict(torch.load(io.BytesIO(self.state["optim"])))
        return _Live(version, modules, compressor, optimizer)

    def _save(self, live: _Live, meta: dict) -> None:
        live.version = uuid.uuid4().hex
        self.state["version"] = live.version.encode()
        self.state["meta"] = json.dumps(meta).encode()
        self.state["weights"] = weights_payload(live.modules).to_bytes()
        buffer = io.BytesIO()
        torch.save(live.optimizer.state_dict(), buffer)
        self.state["optim"] = buffer.getvalue()
        if self.use_cache:
            _LIVE[self._key] = live
