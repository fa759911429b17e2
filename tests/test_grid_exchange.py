"""`strategies.grid_exchange.push_pull` against a fake Grid (no Flower server, no real time)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from strategies.grid_exchange import push_pull


@dataclass
class Meta:
    reply_to_message_id: str


@dataclass
class Reply:
    metadata: Meta
    error: bool = False


@dataclass
class FakeGrid:
    """Replies become visible at given pull numbers (1 = the first pull)."""

    ready_at: dict[str, int]
    errors: set[str] = field(default_factory=set)
    unpushable: set[str] = field(default_factory=set)
    pulls: list[set[str]] = field(default_factory=list)

    def push_messages(self, messages):
        return [None if m in self.unpushable else f"id-{m}" for m in messages]

    def pull_messages(self, ids):
        self.pulls.append(set(ids))
        n = len(self.pulls)
        return [
            Reply(Meta(mid), error=mid.removeprefix("id-") in self.errors)
            for mid in sorted(ids)
            if self.ready_at[mid.removeprefix("id-")] <= n
        ]


class FakeClock:
    def __init__(self):
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_replies_over_several_polls():
    grid, clock = FakeGrid({"a": 1, "b": 3, "c": 2}), FakeClock()
    replies = push_pull(
        grid, ["a", "b", "c"], timeout_s=10, poll_s=0.05, clock=clock, sleep=clock.sleep
    )
    assert [r.metadata.reply_to_message_id for r in replies] == ["id-a", "id-c", "id-b"]
    assert len(grid.pulls) == 3 and clock.sleeps == [0.05, 0.05]
    # a reply, once in, is not asked for again
    assert grid.pulls[1] == {"id-b", "id-c"} and grid.pulls[2] == {"id-b"}


def test_timeout_returns_partial_replies():
    grid, clock = FakeGrid({"a": 1, "b": 10**9}), FakeClock()
    replies = push_pull(
        grid, ["a", "b"], timeout_s=0.12, poll_s=0.05, clock=clock, sleep=clock.sleep
    )
    assert [r.metadata.reply_to_message_id for r in replies] == ["id-a"]
    assert clock.sleeps == pytest.approx([0.05, 0.05, 0.02])  # never past the deadline
    assert len(grid.pulls) == 4  # ... and one last pull at the deadline


def test_error_replies_are_returned_as_replies():
    grid, clock = FakeGrid({"a": 1, "b": 2}, errors={"b"}), FakeClock()
    replies = push_pull(
        grid, ["a", "b"], timeout_s=None, poll_s=0.02, clock=clock, sleep=clock.sleep
    )
    assert [r.error for r in replies] == [False, True]


def test_unpushed_messages_get_no_reply_and_no_wait():
    grid, clock = FakeGrid({"a": 2, "b": 1}, unpushable={"b"}), FakeClock()
    replies = push_pull(grid, ["a", "b"], timeout_s=5, poll_s=0.05, clock=clock, sleep=clock.sleep)
    assert [r.metadata.reply_to_message_id for r in replies] == ["id-a"]
    assert grid.pulls[0] == {"id-a"}
    assert push_pull(FakeGrid({}, unpushable={"x"}), ["x"], timeout_s=5) == []


def test_rejects_non_positive_poll():
    with pytest.raises(ValueError, match="poll_s"):
        push_pull(FakeGrid({}), [], timeout_s=1, poll_s=0)
