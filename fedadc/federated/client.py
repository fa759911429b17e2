"""A client's side of federated split learning, correct in whichever process runs it.

By default everything a client must remember between the messages of a round lives in
``state`` (a mapping of bytes: Flower's ``context.state`` in the apps, a dict in-process):
the head's weights and optimizer state, and for each pending step its batch indices and ADC
plan.
Around each message the client restores a :class:`~fedadc.step.SplitClient` from that
state, drives it, and saves it back. When a gradient arrives for a step this process did
not keep the graph of, the step's forward is replayed from the stored batch and plan
(bit-identical). A per-process cache of the live ``SplitClient`` skips the replay when
the same process handled the previous message and the state version matches; it is an
optimization only and never changes a result.

Across rounds a client keeps only what ``optim.client_state`` asks: the head always comes
with the first message of a round; the optimizer starts fresh (``reset``) or continues from
the moments saved at the client's last round end (``keep``); the data position and the lr
are derived from (round, step).

When to write the state is the ``persist`` policy, chosen by whoever runs the client:
``every_message`` (default) writes weights and optimizer after every message, so any
process can serve the next one; ``round_end`` is for a process that serves every message
of its node (a warm worker): head, optimizer and pending graphs stay in memory during a
round and the state gets weights and optimizer only at the round's finish. A mid-round
message that finds neither its live objects nor weights in the state raises
:class:`RoundStateLost`: the server drops that client for the round, as a crashed one.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from typing import Literal, get_args

import torch
from torch import nn

from fedadc.compression.base import Compressor, Plan
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
from fedadc.federated.optim_state import load_optimizer_bytes, optimizer_to_bytes
from fedadc.schedule import LrCurve, set_lr
from fedadc.seeding import generator, stream_seed
from fedadc.step import SplitClient
from fedadc.wire.messages import FromClient, ToClient
from fedadc.wire.payload import Kind, Payload, WireFormat


@dataclass(frozen=True)
class ClientSettings:
    """What a client needs of the run, read once from the RunConfig at the edge."""

    seed: int
    device: str
    batch_size: int
    local_steps: int
    head_update: str
    learning_rate: float
    weight_decay: float
    wire: WireFormat
    lr_curve: LrCurve
    client_state: str = "reset"
    head_trainable: bool = True
    """False: a frozen head streams payloads (no graph, nothing pending, no upload)."""

    @classmethod
    def from_run(cls, run: RunConfig) -> ClientSettings:
        fed = run.federation
        return cls(
            seed=run.seed,
            device=run.device,
            batch_size=fed.batch_size,
            local_steps=fed.local_steps,
            head_update=fed.head_update,
            learning_rate=run.learning_rate,
            weight_decay=run.optim.weight_decay,
            wire=WireFormat.from_config(run.wire),
            lr_curve=run.lr_curve,
            client_state=run.optim.client_state,
            head_trainable=run.model.head_trainable,
        )


Builder = Callable[[], tuple[nn.ModuleDict, Compressor]]
"""Builds the client's modules (head + the compressor's encoder) and its compressor."""


@dataclass
class _Live:
    """In-process objects of one client, valid while ``version`` matches the state."""

    version: str
    modules: nn.ModuleDict
    step: SplitClient


_LIVE: dict[tuple[str, int], _Live] = {}

Persist = Literal["every_message", "round_end"]
PERSIST: tuple[str, ...] = get_args(Persist)

IN_MEMORY = "in_memory"
"""Meta flag of a round_end state mid-round: its weights and optimizer live only in memory."""


class RoundStateLost(RuntimeError):
    """A mid-round message found no live objects and no weights in the state to recompute
    from (round_end persistence, the process that held them is gone)."""


class FederatedClient:
    """Handles one :class:`ToClient` message and returns the :class:`FromClient` reply."""

    def __init__(
        self,
        settings: ClientSettings,
        partition: int,
        data: ImageSplit,
        build: Builder,
        state: MutableMapping[str, bytes],
        *,
        cache_key: str = "",
        use_cache: bool = True,
        persist: Persist = "every_message",
    ) -> None:
        if persist not in PERSIST:
            raise ValueError(f"persist must be one of {PERSIST}, got {persist!r}")
        if persist == "round_end" and not use_cache:
            raise ValueError("persist='round_end' keeps the round in memory: needs use_cache=True")
        self.persist = persist
        self.settings = settings
        self.partition = partition
        self.data = data
        self.build = build
        self.state = state
        self.use_cache = use_cache
        self._key = (cache_key, partition)

    @classmethod
    def for_run(
        cls,
        run: RunConfig,
        partition: int,
        state: MutableMapping[str, bytes],
        *,
        use_cache: bool = True,
        persist: Persist = "every_message",
    ) -> FederatedClient:
        """The client of ``partition`` in ``run``, its state in ``state``."""

        def build() -> tuple[nn.ModuleDict, Compressor]:
            split, compressor = build_split(run, load_data(run))
            return client_modules(split, compressor), compressor

        return cls(
            ClientSettings.from_run(run),
            partition,
            client_data(run, partition),
            build,
            state,
            cache_key=repr(run),
            use_cache=use_cache,
            persist=persist,
        )

    def handle(self, msg: ToClient) -> FromClient:
        started = time.perf_counter()  # reported as compute_s (fedadc.federated.timing)
        live = self._restore(msg)
        meta = json.loads(self.state.get("meta", b"{}"))
        if msg.head is not None:
            meta = {"round": msg.round, "examples": 0, "pending": []}
        if msg.gradients:
            self._apply_gradients(live, meta, msg.gradients)
        reply = FromClient(partition=self.partition)
        if msg.outputs:  # U-shape: the end's step on the server's outputs
            reply.output_gradients = self._end_steps(live, meta, msg.outputs)
        payloads = []
        trainable = self.settings.head_trainable
        for i in range(msg.num_steps):
            data, num = self._forward(live, msg.round, msg.first_step + i)
            payloads.append(data)
            if trainable:  # a frozen head's step needs nothing more: no gradient comes
                meta["pending"].append(msg.first_step + i)
            meta["examples"] += num
        reply.payloads = payloads
        weights = weights_payload(live.modules).to_bytes() if msg.finish else None
        if msg.finish:
            reply.head = weights if trainable else None  # a frozen head is not uploaded
            reply.num_examples = meta["examples"]
        self._save(live, meta, weights)
        reply.compute_s = time.perf_counter() - started
        return reply

    def _global_step(self, round_: int, step: int) -> int:
        """Global step index of this client: the data position, derived, not stored."""
        return (round_ - 1) * self.settings.local_steps + step

    def _batch_indices(self, g: int) -> torch.Tensor:
        seed = self.settings.seed
        n, b = len(self.data), self.settings.batch_size
        per_epoch = n // b
        if per_epoch == 0:  # partition smaller than a batch: one batch of everything
            return torch.randperm(n, generator=generator(seed, f"data-{self.partition}-{g}"))
        epoch, pos = divmod(g, per_epoch)
        perm = torch.randperm(n, generator=generator(seed, f"data-{self.partition}-e{epoch}"))
        return perm[pos * b : (pos + 1) * b]

    def _run_step(
        self, split: SplitClient, idx: torch.Tensor, round_: int, step: int, plan: Plan | None
    ) -> Payload:
        """One step's forward on ``split``, seeded by (partition, global step)."""
        seed, g = self.settings.seed, self._global_step(round_, step)
        images, labels = self.data.batch(idx, stream_seed(seed, f"aug-{self.partition}-{g}"))
        device = torch.device(self.settings.device)
        return split.forward(
            images.to(device),
            labels.to(device),
            plan,
            key=step,
            seed=stream_seed(seed, f"fwd-{self.partition}-{g}"),
            generator=None if plan is not None else generator(seed, f"plan-{self.partition}-{g}"),
        )

    def _forward(self, live: _Live, round_: int, step: int) -> tuple[bytes, int]:
        idx = self._batch_indices(self._global_step(round_, step))
        trainable = self.settings.head_trainable
        with torch.set_grad_enabled(self.use_cache and trainable):
            payload = self._run_step(live.step, idx, round_, step, None)
        if not trainable:  # streamed: no graph, plan or batch kept for a gradient
            live.step.pending.clear()
            return payload.to_bytes(), len(idx)
        pending = Payload(meta={"round": str(round_)})
        pending.add("batch", idx, Kind.INDICES)
        for key, tensor in live.step.pending[-1].plan.items():
            pending.add(f"plan.{key}", tensor, Kind.INDICES)
        if self.persist == "every_message":  # round_end: no replay without the weights
            self.state[f"pending.{step}"] = pending.to_bytes()
        return payload.to_bytes(), len(idx)

    def _apply_gradients(self, live: _Live, meta: dict, gradients: list[bytes]) -> None:
        steps = meta["pending"]
        if len(gradients) != len(steps):
            raise ValueError(
                f"client {self.partition} has {len(steps)} pending steps but received "
                f"{len(gradients)} gradients"
            )
        split = live.step
        self._ensure_pending(split, meta["round"], steps, with_end=split.end is not None)
        set_lr(split.optimizer, self.settings.lr_curve.at(meta["round"], steps[-1]))
        split.backward([Payload.from_bytes(data) for data in gradients])
        for step in steps:
            self.state.pop(f"pending.{step}", None)
            self.state.pop(f"output.{step}", None)
        meta["pending"] = []

    def _end_steps(self, live: _Live, meta: dict, outputs: list[bytes]) -> list[bytes]:
        """U-shape: the loss on each pending step's output from the server; returns the
        gradients w.r.t. those outputs. The losses stay here, with the labels."""
        steps = meta["pending"]
        split = live.step
        if split.end is None:
            raise ValueError(f"client {self.partition} got middle outputs but is not U-shaped")
        if len(outputs) != len(steps):
            raise ValueError(
                f"client {self.partition} has {len(steps)} pending steps but received "
                f"{len(outputs)} outputs"
            )
        self._ensure_pending(split, meta["round"], steps, with_end=False)
        grads = []
        for step, data in zip(steps, outputs, strict=True):
            grad, _ = self._end_step(split, meta["round"], step, data)
            if self.persist == "every_message":  # another process may apply the gradient
                self.state[f"output.{step}"] = data
            grads.append(grad.to_bytes())
        return grads

    def _end_step(self, split: SplitClient, round_: int, step: int, output: bytes):
        """The end's forward and backward of one step, seeded by (partition, global step)."""
        g = self._global_step(round_, step)
        seed = stream_seed(self.settings.seed, f"end-{self.partition}-{g}")
        return split.end_step(Payload.from_bytes(output), seed=seed)

    def _ensure_pending(
        self, split: SplitClient, round_: int, steps: list[int], *, with_end: bool
    ) -> None:
        """Make ``split`` hold the pending ``steps``: kept by this process, or replayed from
        the stored batch and plan (``with_end``, U-shape: and the end's step from its stored
        output)."""
        if [p.key for p in split.pending] == steps:
            return
        split.pending = []
        for step in steps:
            self._replay(split, round_, step)
            if with_end:
                self._end_step(split, round_, step, self.state[f"output.{step}"])

    def _replay(self, split: SplitClient, round_: int, step: int) -> None:
        stored = Payload.from_bytes(self.state[f"pending.{step}"])
        plan = {
            name[len("plan.") :]: t.to(self.settings.device)
            for name, t in stored.tensors.items()
            if name.startswith("plan.")
        }
        self._run_step(split, stored["batch"], round_, step, plan)

    def _restore(self, msg: ToClient) -> _Live:
        version = self.state.get("version", b"").decode()
        cached = _LIVE.get(self._key) if self.use_cache else None
        if msg.head is None and cached is not None and cached.version == version:
            return cached
        if msg.head is None and json.loads(self.state.get("meta", b"{}")).get(IN_MEMORY):
            raise RoundStateLost(
                f"client {self.partition} lost its in-memory round state (worker restarted "
                "mid-round, or the round moved to another process); it is dropped for this "
                "round and rejoins at the next round start"
            )
        if cached is not None:  # reuse the built modules; their weights are replaced below
            modules, compressor = cached.modules, cached.step.compressor
        else:
            modules, compressor = self.build()
        weights = msg.head if msg.head is not None else self.state.get("weights")
        if weights is None:
            raise ValueError(
                f"client {self.partition} got a step message without a round start: no head "
                "weights in its state (was the round started on another node?)"
            )
        load_weights(modules, Payload.from_bytes(weights))
        if not self.settings.head_trainable:  # frozen: no graph even where grad is on
            modules.requires_grad_(False)
        optimizer = torch.optim.Adam(
            modules.parameters(),
            lr=self.settings.learning_rate,
            weight_decay=self.settings.weight_decay,
        )
        keep = self.settings.client_state == "keep"  # the last round's moments go on
        if "optim" in self.state and (msg.head is None or keep):
            load_optimizer_bytes(optimizer, self.state["optim"])
        step = SplitClient(
            modules["head"],  # type: ignore[arg-type]
            compressor,
            optimizer,
            wire=self.settings.wire,
            head_update=self.settings.head_update,
            end=modules["end"] if "end" in modules else None,  # type: ignore[arg-type]  # noqa: SIM401 (no ModuleDict.get)
        )
        return _Live(version, modules, step)

    def _save(self, live: _Live, meta: dict, head: bytes | None) -> None:
        """Write what the policy says; ``head`` is the finish message's weights (uploaded
        unless frozen), else None.

        round_end mid-round writes only version and meta (flagged in-memory) and drops the
        last round's weights and optimizer, so that a process without the live objects
        cannot train on them and the state carried with every message stays small.
        """
        live.version = uuid.uuid4().hex
        self.state["version"] = live.version.encode()
        meta = {k: v for k, v in meta.items() if k != IN_MEMORY}
        if self.persist == "round_end" and head is None:
            self.state["meta"] = json.dumps({**meta, IN_MEMORY: True}).encode()
            for key in ("weights", "optim"):
                self.state.pop(key, None)
        else:
            self.state["meta"] = json.dumps(meta).encode()
            weights = head if head is not None else weights_payload(live.modules).to_bytes()
            self.state["weights"] = weights
            self.state["optim"] = optimizer_to_bytes(live.step.optimizer)
        if self.use_cache:
            _LIVE[self._key] = live
