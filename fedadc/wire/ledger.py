"""Where the bytes went: one record per message, totals per direction and kind, ratios.

Ratios follow the paper's cost model against uncompressed split learning, whose step costs
C_Base = B x n x d float32 in each direction:

* ``realised_xi``: activations only, mean of the forward ratio (activation bytes up /
  C_Base) and the backward ratio (gradient bytes down / C_Base), over all steps;
* ``all_in_ratio``: every byte of every message (labels, indices, scales, headers, model
  weights) over 2 x C_Base, the honest cost of a method against Base;
* ``nominal_xi``: the ratio the method claims (what the paper plots), step-weighted.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from fedadc.wire.payload import Kind, Payload, bytes_by_kind

Direction = Literal["up", "down"]


@dataclass(frozen=True)
class MessageRecord:
    direction: Direction
    client: str
    round: int
    step: int
    total_bytes: int
    bytes_by_kind: dict[str, int] = field(default_factory=dict)
    baseline_bytes: int = 0
    """C_Base of the step this message belongs to (0 for messages outside a step)."""
    nominal_xi: float | None = None


class Ledger:
    """Records every message and answers "how many bytes, of what, and at what ratio".

    It only observes: each record is split by kind from the header of the bytes that were
    actually sent, never by serializing again with a format of its own.
    """

    def __init__(self) -> None:
        self.records: list[MessageRecord] = []

    def transmit(
        self,
        payload: Payload,
        *,
        direction: Direction,
        client: str | int = 0,
        round: int = 0,
        step: int = 0,
        baseline_bytes: int = 0,
        nominal_xi: float | None = None,
    ) -> bytes:
        """Serialize ``payload`` in its own wire format, record it, return the bytes."""
        data = payload.to_bytes()
        self.record(
            data,
            direction=direction,
            client=client,
            round=round,
            step=step,
            baseline_bytes=baseline_bytes,
            nominal_xi=nominal_xi,
        )
        return data

    def record(
        self,
        data: bytes,
        *,
        direction: Direction,
        client: str | int = 0,
        round: int = 0,
        step: int = 0,
        baseline_bytes: int = 0,
        nominal_xi: float | None = None,
    ) -> None:
        """Record one message as sent (``data``: its serialized payload)."""
        self.records.append(
            MessageRecord(
                direction=direction,
                client=str(client),
                round=round,
                step=step,
                total_bytes=len(data),
                bytes_by_kind=bytes_by_kind(data),
                baseline_bytes=baseline_bytes,
                nominal_xi=nominal_xi,
            )
        )

    def state_dict(self) -> list[dict[str, object]]:
        return [asdict(r) for r in self.records]

    def load_state_dict(self, records: list[dict[str, object]]) -> None:
        self.records = [MessageRecord(**r) for r in records]  # type: ignore[arg-type]

    def total_bytes(self, direction: Direction | None = None, kind: Kind | None = None) -> int:
        total = 0
        for rec in self.records:
            if direction is not None and rec.direction != direction:
                continue
            total += rec.total_bytes if kind is None else rec.bytes_by_kind.get(kind.value, 0)
        return total

    def bytes_by_kind(self) -> dict[str, dict[str, int]]:
        """{direction: {kind: bytes}}."""
        out: dict[str, dict[str, int]] = {"up": defaultdict(int), "down": defaultdict(int)}
        for rec in self.records:
            for kind, n in rec.bytes_by_kind.items():
                out[rec.direction][kind] += n
        return {d: dict(v) for d, v in out.items()}

    def baseline_bytes(self) -> int:
        """Sum of C_Base over steps (one direction), counted on the forward messages."""
        return sum(r.baseline_bytes for r in self.records if r.direction == "up")

    def realised_xi(self) -> float:
        base = self.baseline_bytes()
        if base == 0:
            return float("nan")
        fwd = self.total_bytes("up", Kind.ACTIVATIONS) / base
        bwd = self.total_bytes("down", Kind.GRADIENTS) / base
        return 0.5 * (fwd + bwd)

    def all_in_ratio(self) -> float:
        base = self.baseline_bytes()
        return self.total_bytes() / (2 * base) if base else float("nan")

    def nominal_xi(self) -> float:
        steps = [r for r in self.records if r.direction == "up" and r.nominal_xi is not None]
        if not steps:
            return float("nan")
        weight = sum(r.baseline_bytes for r in steps)
        return sum(r.nominal_xi * r.baseline_bytes for r in steps) / weight

    def summary(self) -> dict[str, object]:
        return {
            "bytes_up": self.total_bytes("up"),
            "bytes_down": self.total_bytes("down"),
            "bytes_by_kind": self.bytes_by_kind(),
            "baseline_bytes_per_direction": self.baseline_bytes(),
            "nominal_xi": self.nominal_xi(),
            "realised_xi": self.realised_xi(),
            "all_in_ratio": self.all_in_ratio(),
            "messages": len(self.records),
        }

    def write_csv(self, path: str | Path) -> None:
        """One row per message, kinds as columns."""
        kinds = [k.value for k in Kind]
        with open(path, "w", newline="") as fh:
            writer = csv.writer(fh)
            head = (
                [f for f in asdict(self.records[0]) if f != "bytes_by_kind"] if self.records else []
            )
            writer.writerow(head + kinds)
            for rec in self.records:
                row = asdict(rec)
                by_kind = row.pop("bytes_by_kind")
                writer.writerow(list(row.values()) + [by_kind.get(k, 0) for k in kinds])
