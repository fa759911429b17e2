"""Learning-rate schedule shared by the client heads and the server tail.

Both sides derive the factor from the same position, (round, step) of the run, never from
how many optimizer steps a process has taken: the tail takes N steps per client step, a
restarted client takes none, yet both must follow one curve. Written here rather than with
``torch.optim.lr_scheduler`` because those count ``scheduler.step()`` calls per optimizer,
which differ between the two sides and across processes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

SCHEDULES = ("constant", "cosine")


def lr_factor(
    position: float, total: float, schedule: str, warmup: float, cooldown: float = 0.0
) -> float:
    """The multiplier of the base lr at ``position`` of ``total`` steps.

    ``warmup``: fraction of ``total`` over which the factor rises linearly from ~0 to 1;
    ``cosine`` then decays it to 0 at ``total`` (``constant`` keeps 1). ``cooldown``
    (``constant`` only): fraction of ``total`` at the end over which the factor falls
    linearly from 1 to ~0 (warm-up/stable/decay), meant to settle the model at the end
    without the whole-run slowdown of a cosine; it did not help the default run
    (docs/results/first-run.md 2d), so it is off by default.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    total = max(float(total), 1.0)
    warm = warmup * total
    if position < warm:
        return (position + 1.0) / (warm + 1.0)
    if schedule == "constant":
        cool = cooldown * total
        start = total - cool
        if cool > 0 and position >= start:
            return max(total - position, 0.0) / cool
        return 1.0
    progress = min(1.0, (position - warm) / max(total - warm, 1.0))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


@dataclass(frozen=True)
class LrCurve:
    """A run's lr at each (round, step): what the clients' heads and the tail both follow."""

    base: float
    rounds: int
    local_steps: int
    schedule: str = "constant"
    warmup: float = 0.0
    cooldown: float = 0.0

    def at(self, round_: int, step: int) -> float:
        """The lr of local step ``step`` (0-based) of round ``round_`` (1-based)."""
        position = (round_ - 1) * self.local_steps + step
        total = self.rounds * self.local_steps
        return self.base * lr_factor(position, total, self.schedule, self.warmup, self.cooldown)
