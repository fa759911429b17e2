"""The round loop of federated split learning, written once for every transport.

``SflRounds.run`` is the template (like Flower's ``Strategy.start``): each round
samples clients, trains them (head broadcast, one round trip per S steps, head upload),
aggregates the heads, evaluates, records, and checks the stop conditions. Subclasses
override hooks, never the loop: ``SlRounds`` is vanilla split learning (clients in
turn, head relayed). The transport decides how messages travel: a function call for the
in-process reference, Flower messages in the apps.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from fedadc.config.schema import RunConfig
from fedadc.data.tensors import ImageData
from fedadc.evaluation import not_evaluated
from fedadc.federated.build import load_data
from fedadc.federated.server import FederatedServer
from fedadc.federated.threads import run_threads
from fedadc.federated.timing import StepTiming, describe
from fedadc.federated.validation import CheckedReply, RejectedPayload
from fedadc.seeding import generator
from fedadc.wire.messages import ToClient
from fedadc.wire.transport import Transport

log = logging.getLogger("fedadc")


@dataclass
class RoundsResult:
    history: list[dict[str, float]] = field(default_factory=list)
    stop_reason: str = ""
    server: FederatedServer | None = None

    @property
    def final_accuracy(self) -> float:
        return self.history[-1]["test_accuracy"] if self.history else float("nan")


class SflRounds:
    """Split federated learning (``sfl``): sampled clients train in parallel on one tail."""

    def __init__(
        self,
        run: RunConfig,
        transport: Transport,
        *,
        data: ImageData | None = None,
        server: FederatedServer | None = None,
        on_round: Callable[[dict[str, float], FederatedServer], None] | None = None,
    ) -> None:
        self.run_config = run
        self.transport = transport
        self.data = data if data is not None else load_data(run)
        self.server = server if server is not None else FederatedServer(run, self.data)
        self.on_round = on_round
        self._last_exchange_bytes = 0
        self._budget_hit = False
        self.rejected: list[tuple[int, RejectedPayload]] = []
        """(round, error) of every reply the server rejected."""
        self.timing = StepTiming()
        """The current round's training time by component (fedadc.federated.timing)."""
        fed = run.federation
        if fed.messages_steps > 1 and run.model.head_trainable:  # frozen: exact for any S
            log.warning(
                "steps_per_message=%d: each client computes %d batches with the same head and "
                "applies their gradients late (head_update=%s). Fewer messages, lower accuracy: "
                "S=1 is exact split learning (see docs/flower.md for measured accuracy vs S)",
                fed.messages_steps,
                fed.messages_steps,
                fed.head_update,
            )

    def run(self, start_round: int = 1, history: list | None = None) -> RoundsResult:
        """Rounds ``start_round`` to the last (or a stop condition), with torch's thread
        count pinned to ``run.threads`` here rather than by each caller: CPU results depend
        on it, and a caller that forgot it ran ~20x slower under load."""
        with run_threads(self.run_config):
            return self._run(start_round, history)

    def _run(self, start_round: int, history: list | None) -> RoundsResult:
        fed = self.run_config.federation
        result = RoundsResult(history=list(history or []), server=self.server)
        started = time.perf_counter()
        for rnd in range(start_round, fed.rounds + 1):
            clients = self.sample_clients(rnd)
            # stop before a round the budget cannot pay for (head down and up, or only
            # down for a frozen head, and at least one exchange like the last one)
            moves = 1 if self.server.head_frozen else 2
            if self._budget_exhausted(
                moves * self.server.head_cost(len(clients)) + self._last_exchange_bytes
            ):
                result.stop_reason = "budget"
                break
            # train: head broadcast, per-step exchange, head upload
            losses_before = len(self.server.losses)
            self.timing = StepTiming()
            train_started = time.perf_counter()
            heads = self.train_round(rnd, clients)
            self.timing.total_s = time.perf_counter() - train_started
            self.check_enough_clients(rnd, clients, heads)
            self.aggregate_heads(rnd, heads)
            row = self.record(rnd, heads, losses_before, started)
            result.history.append(row)
            if self.on_round is not None:
                self.on_round(row, self.server)
            if self._budget_hit:
                result.stop_reason = "budget"
                break
        else:
            result.stop_reason = "rounds"
        log.info("stopped (%s) after %d rounds", result.stop_reason, len(result.history))
        return result

    def sample_clients(self, rnd: int) -> list[int]:
        """Seeded choice of max(min_train_clients, ceil(fraction * N)) partitions."""
        fed = self.run_config.federation
        count = min(
            fed.num_clients,
            max(fed.min_train_clients, math.ceil(fed.fraction_train * fed.num_clients)),
        )
        order = torch.randperm(
            fed.num_clients, generator=generator(self.run_config.seed, f"sample-{rnd}")
        )
        return sorted(order[:count].tolist())

    def train_round(self, rnd: int, clients: list[int]) -> dict[int, CheckedReply]:
        return self.run_clients(rnd, clients, self.server.global_head)

    def aggregate_heads(self, rnd: int, heads: dict[int, CheckedReply]) -> None:
        if self.server.head_frozen:  # nothing uploaded: the global head stays as it is
            return
        self.server.fedavg(heads)

    def check_enough_clients(
        self, rnd: int, clients: list[int], heads: dict[int, CheckedReply]
    ) -> None:
        self._require(rnd, len(clients), len(heads))

    def _require(self, rnd: int, sampled: int, finished: int) -> None:
        wanted = self.run_config.federation.min_train_clients
        if finished < max(1, min(wanted, sampled)):
            raise RuntimeError(
                f"round {rnd}: only {finished} of {sampled} clients finished, fewer than "
                f"federation.min_train_clients={wanted}; the run stops (failed or rejected "
                "clients are logged above)"
            )

    def run_clients(self, rnd: int, clients: list[int], head: bytes) -> dict[int, CheckedReply]:
        """Train ``clients`` for one round starting from ``head``; returns their uploads.

        A frozen head streams: each message only asks for the next S payloads (the last
        one says ``finish``), no gradient goes back and no head comes up, so a round is
        ceil(local_steps / S) round trips and S = all local steps is one."""
        fed = self.run_config.federation
        per_message, local = fed.messages_steps, fed.local_steps
        frozen = self.server.head_frozen
        count = min(per_message, local)
        messages = {
            c: ToClient(rnd, 0, count, head=head, finish=frozen and count == local) for c in clients
        }
        replies = self._exchange(rnd, messages)
        done = 0
        while True:
            before = self.server.spent()
            gradients, replies = self.train_step(rnd, replies, done)
            done += count
            count = min(per_message, local - done)
            # payloads up + gradients down, in the budget's scope
            self._last_exchange_bytes = self.server.spent() - before
            upload = 0 if frozen else self.server.head_cost(len(replies))
            next_cost = self._last_exchange_bytes + upload
            if count > 0 and self._budget_exhausted(next_cost):
                self._budget_hit = True
                count = 0
            if frozen and count == 0:  # no gradients to deliver, no head to collect
                return replies
            finish = done + count == local if frozen else count == 0
            messages = {
                c: ToClient(rnd, done, count, gradients=gradients[c], finish=finish)
                for c in replies
            }
            replies = self._exchange(rnd, messages)
            if finish and not frozen:
                self.server.received(replies, rnd, done)
                return replies

    def train_step(
        self, rnd: int, replies: dict[int, CheckedReply], step: int
    ) -> tuple[dict[int, list[bytes]], dict[int, CheckedReply]]:
        """Train the server's part on one exchange's payloads; returns each client's
        gradients and the clients still in the round.

        Standard: the tail steps on the payloads. U-shape: a second round trip inside the
        step, since the loss lives on the clients: the middle's outputs go down, their
        gradients come up, the middle steps."""
        if not self.server.u_shape:
            with self.timing.server():
                return self.server.train_on(replies, rnd, step), replies
        with self.timing.server():
            outputs = self.server.forward_middle(replies, rnd, step)
        answers = self._exchange(
            rnd, {pid: ToClient(rnd, step, 0, outputs=outputs[pid]) for pid in outputs}
        )
        with self.timing.server():
            gradients = self.server.backward_middle(answers, rnd, step)
        return gradients, {pid: replies[pid] for pid in answers}

    def _exchange(self, rnd: int, messages: dict[int, ToClient]) -> dict[int, CheckedReply]:
        """Send ``messages``; return the replies that came back and passed validation,
        decoded once.

        A client that failed (no reply) or whose reply is rejected is dropped from the rest
        of the round: its head is not averaged and none of the rejected reply's payloads
        reaches the tail; tail steps already taken on its earlier, valid payloads stay
        (docs/faults.md).
        """
        self.server.send(messages, rnd)
        sent = time.perf_counter()
        replies = self.transport.exchange(messages)
        asked = [pid for pid in replies if pid in messages]
        self.timing.exchange(  # steps: what the server asked for, not what a reply claims
            time.perf_counter() - sent,
            (replies[pid].compute_s for pid in asked),
            max((messages[pid].num_steps for pid in asked), default=0),
        )
        lost = sorted(set(messages) - set(replies))
        if lost:
            log.warning("round %d: clients %s failed and are dropped from this round", rnd, lost)
        accepted: dict[int, CheckedReply] = {}
        for pid, reply in sorted(replies.items()):
            if pid not in messages:
                log.warning(
                    "round %d: ignoring a reply from client %d, which was not asked", rnd, pid
                )
                continue
            try:
                with self.timing.server():
                    accepted[pid] = self.server.validate(pid, messages[pid], reply)
            except RejectedPayload as err:
                log.warning("round %d: %s; dropped from this round", rnd, err)
                self.rejected.append((rnd, err))
        return accepted

    def _budget_exhausted(self, extra: int = 0) -> bool:
        """Would spending ``extra`` more bytes exceed the budget?"""
        budget = self.server.budget_bytes()
        return budget is not None and self.server.spent() + extra > budget

    def record(
        self,
        rnd: int,
        heads: dict[int, CheckedReply],
        losses_before: int,
        started: float,
    ) -> dict[str, float]:
        server, ledger = self.server, self.server.ledger
        fed = self.run_config.federation
        losses = server.losses[losses_before:]
        row: dict[str, float] = {
            "round": rnd,
            "clients": len(heads),
            "train_loss": sum(losses) / len(losses) if losses else float("nan"),
            "bytes_up": ledger.total_bytes("up"),
            "bytes_down": ledger.total_bytes("down"),
            "realised_xi": ledger.realised_xi(),
            "all_in_ratio": ledger.all_in_ratio(),
            "wall_s": time.perf_counter() - started,
            **self.timing.row(),
        }
        budget = server.budget_bytes()
        row["budget_used"] = server.spent() / budget if budget else float("nan")
        if rnd % fed.eval_every == 0 or rnd == fed.rounds or self._budget_hit:
            row.update(server.evaluate().metrics())
        else:
            row.update(not_evaluated())
        log.info(
            "round %3d | clients %2d | train loss %.4f | test acc %.4f (unc %.4f / split %.4f) "
            "| up %s down %s | budget %s | xi %.4f (all-in %.4f) | %s",
            rnd,
            len(heads),
            row["train_loss"],
            row["test_accuracy"],
            row["test_accuracy_uncompressed"],
            row["test_accuracy_split"],
            _fmt(row["bytes_up"]),
            _fmt(row["bytes_down"]),
            f"{100 * row['budget_used']:5.1f}%" if budget else "none",
            row["realised_xi"],
            row["all_in_ratio"],
            describe(row),
        )
        return row


class SlRounds(SflRounds):
    """Vanilla split learning (``sl``): clients train one after another, the head is relayed
    through the server (its bytes counted both ways), no averaging."""

    def sample_clients(self, rnd: int) -> list[int]:
        clients = super().sample_clients(rnd)
        order = torch.randperm(
            len(clients), generator=generator(self.run_config.seed, f"turn-{rnd}")
        )
        return [clients[i] for i in order.tolist()]

    def train_round(self, rnd: int, clients: list[int]) -> dict[int, CheckedReply]:
        head, last = self.server.global_head, {}
        self._finished = 0
        for c in clients:
            got = self.run_clients(rnd, [c], head)
            if c in got:  # a failed client is skipped; the head goes on from the last one
                head = head if self.server.head_frozen else got[c].message.head
                last = got
                self._finished += 1
        return last

    def check_enough_clients(
        self, rnd: int, clients: list[int], heads: dict[int, CheckedReply]
    ) -> None:
        # only the last head is kept, but every client that finished counts
        self._require(rnd, len(clients), self._finished)

    def aggregate_heads(self, rnd: int, heads: dict[int, CheckedReply]) -> None:
        if self.server.head_frozen:  # the relayed head never changed
            return
        (reply,) = heads.values()
        self.server.set_global_head(reply.message.head)


def rounds_for(run: RunConfig) -> type[SflRounds]:
    return SlRounds if run.federation.mode == "sl" else SflRounds


def _fmt(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000:
            return f"{n:.1f}{unit}"
        n /= 1000
    return f"{n:.1f}TB"
