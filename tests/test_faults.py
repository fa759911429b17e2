"""Faults: hostile or broken replies are rejected naming the client, the tail never sees
them, and the run goes on without that client (in-process; Flower: test_flower_faults.py).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from fedadc.compression import create_compressor, list_compressors
from fedadc.config.schema import DataConfig, MethodConfig, RunConfig
from fedadc.federated import InProcessTransport, rounds_for
from fedadc.federated.build import load_data
from fedadc.federated.reference import train_reference
from fedadc.federated.results import RunDirectory
from fedadc.federated.server import FederatedServer
from fedadc.federated.validation import RejectedPayload, default_max_payload_bytes
from fedadc.wire import Payload
from fedadc.wire.messages import FromClient, ToClient
from fedadc.wire.payload import Kind
from tests.test_federated import assert_same, make_run

HOSTILE = 1
"""The partition that misbehaves."""


def small_run(method: str = "identity", params: dict | None = None, **federation) -> RunConfig:
    fed = {"num_clients": 3, "rounds": 1, "local_steps": 2, "batch_size": 8, **federation}
    return dataclasses.replace(
        make_run(**fed),
        method=MethodConfig(method, params or {}),
        data=DataConfig(max_test_samples=64),
    )


METHODS = {
    "identity": {},
    "adc": {"xi": 0.25},
    "quantization": {"bits": 4},
    "topk": {"ratio": 0.1},
    "c3sl": {"group_size": 2},
    "bottlenet": {"ratio": 0.25},
}


@functools.cache
def valid_reply(method: str) -> tuple[bytes, bytes]:
    """Client HOSTILE's honest first payload and honest head upload of round 1."""
    run = small_run(method, METHODS[method], local_steps=1)
    server = FederatedServer(run, load_data(run))
    transport = InProcessTransport(run)
    start = ToClient(1, 0, 1, head=server.global_head)
    (first,) = transport.exchange({HOSTILE: start}).values()
    checked = server.validate(HOSTILE, start, first)
    gradients = server.train_on({HOSTILE: checked}, 1, 0)[HOSTILE]
    (last,) = transport.exchange({HOSTILE: ToClient(1, 1, 0, gradients, finish=True)}).values()
    return first.payloads[0], last.head


class Replay:
    """A transport that returns one given reply."""

    def __init__(self, reply: FromClient) -> None:
        self.reply = reply

    def exchange(self, messages):
        return {self.reply.partition: self.reply}


def edit(
    data: bytes, drop: tuple[str, ...] = (), batch_size: int | None = None, **tensors
) -> bytes:
    payload = Payload.from_bytes(data)
    for name in drop:
        del payload.tensors[name], payload.kinds[name]
    for name, tensor in tensors.items():
        payload.tensors[name] = tensor
        payload.kinds.setdefault(name, Kind.ACTIVATIONS)
    if batch_size is not None:
        payload.batch_size = batch_size
    return payload.to_bytes()


def acts(data: bytes) -> torch.Tensor:
    return Payload.from_bytes(data)["activations"].clone()


def labels(data: bytes) -> torch.Tensor:
    return Payload.from_bytes(data)["labels"].clone()


def with_value(t: torch.Tensor, value: float) -> torch.Tensor:
    t = t.clone()
    t.view(-1)[0] = value
    return t


# (case id, method, how the payload is spoiled, what the error must say)
PAYLOAD_CASES = [
    ("garbage", "identity", lambda d: b"\x07" * 40, "malformed payload"),
    ("truncated", "identity", lambda d: d[: len(d) // 2], "malformed payload"),
    (
        "too-many-tokens",
        "identity",
        lambda d: edit(d, activations=torch.cat([acts(d), acts(d)[:, :1]], dim=1)),
        r"1 <= k <= 17 tokens, got \(8, 18, 32\)",
    ),
    (
        "wrong-dim",
        "identity",
        lambda d: edit(d, activations=acts(d)[..., :-1]),
        r"B x k x 32 .* got \(8, 17, 31\)",
    ),
    (
        "int-activations",
        "identity",
        lambda d: edit(d, activations=acts(d).to(torch.int32)),
        "'activations' must be float, got torch.int32",
    ),
    ("nan", "identity", lambda d: edit(d, activations=with_value(acts(d), math.nan)), "NaN or Inf"),
    ("inf", "identity", lambda d: edit(d, activations=with_value(acts(d), math.inf)), "NaN or Inf"),
    (
        "more-rows-than-batch",
        "identity",
        lambda d: edit(
            d,
            activations=torch.cat([acts(d), acts(d)[:1]]),
            labels=torch.cat([labels(d), labels(d)[:1]]),
        ),
        "9 rows for 9 samples; the batch size allows 1 to 8",
    ),
    (
        "oversized",
        "identity",
        lambda d: edit(d, activations=acts(d).repeat(20, 1, 1), labels=labels(d).repeat(20)),
        r"exceeds federation\.max_payload_bytes=",
    ),
    (
        "label-too-large",
        "identity",
        lambda d: edit(d, labels=with_value(labels(d), 10)),
        r"labels must lie in \[0, 9\]",
    ),
    (
        "negative-label",
        "identity",
        lambda d: edit(d, labels=with_value(labels(d), -1)),
        r"labels must lie in \[0, 9\]",
    ),
    (
        "label-count",
        "identity",
        lambda d: edit(d, labels=labels(d)[:-1]),
        "7 labels for 8 samples",
    ),
    ("missing-labels", "identity", lambda d: edit(d, drop=("labels",)), "must hold tensors"),
    (
        "extra-tensor",
        "identity",
        lambda d: edit(d, secret=torch.zeros(3)),
        r"must hold tensors \['activations', 'labels'\], got \['activations', 'labels', 'secret'\]",
    ),
    (
        "soft-labels-not-summing-to-one",
        "adc",
        lambda d: edit(d, labels=labels(d) * 2),
        "soft labels must be non-negative rows summing to 1",
    ),
    (
        "negative-soft-labels",
        "adc",
        lambda d: edit(d, labels=labels(d) - 0.5),
        "soft labels must be non-negative",
    ),
    (
        "soft-label-columns",
        "adc",
        lambda d: edit(d, labels=labels(d)[:, :-1]),
        r"soft labels must be \d+ x 10",
    ),
    (
        "claimed-batch-size",
        "adc",
        lambda d: edit(d, batch_size=100000),
        r"meta batch_size 100000 outside \[1, 8\]",
    ),
    (
        "adc-too-many-tokens",
        "adc",
        lambda d: edit(d, activations=torch.zeros(2, 18, 32)),
        r"1 <= k <= 17",
    ),
    (
        "quantization-nan-scales",
        "quantization",
        lambda d: edit(d, scales=torch.tensor([0.0, math.nan])),
        "2 finite floats",
    ),
    (
        "quantization-short-codes",
        "quantization",
        lambda d: edit(d, activations=acts(d)[:-1]),
        "need a uint8 vector",
    ),
    (
        "quantization-float-codes",
        "quantization",
        lambda d: edit(d, activations=acts(d).float()),
        "'activations' must be uint8",
    ),
    (
        "topk-index-out-of-range",
        "topk",
        lambda d: edit(
            d, indices=with_value(Payload.from_bytes(d)["indices"].to(torch.int32), 10**6)
        ),
        r"indices must lie in \[0, 544\)",
    ),
    (
        "c3sl-batch-mismatch",
        "c3sl",
        lambda d: edit(d, batch_size=3),
        "does not match",
    ),
    (
        "bottlenet-wide-code",
        "bottlenet",
        lambda d: edit(d, activations=torch.zeros(8, 17, 32)),
        r"B x 17 x 8",
    ),
]

HEAD_CASES = [
    (
        "head-nan",
        lambda h: _edit_head(
            h, lambda name, t: with_value(t, math.nan) if name == first_name(h) else t
        ),
        "contains NaN or Inf",
    ),
    (
        "head-shape",
        lambda h: _edit_head(h, lambda name, t: t[:1] if name == first_name(h) else t),
        "expected torch.float32",
    ),
    (
        "head-missing-tensor",
        lambda h: _edit_head(h, lambda name, t: None if name == first_name(h) else t),
        "head upload tensors differ: missing",
    ),
    ("head-garbage", lambda h: b"\x00" * 100, "malformed payload"),
]


def first_name(head: bytes) -> str:
    return sorted(Payload.from_bytes(head).tensors)[0]


def _edit_head(head: bytes, change) -> bytes:
    payload = Payload.from_bytes(head)
    out = Payload()
    for name, tensor in payload.tensors.items():
        new = change(name, tensor)
        if new is not None:
            out.add(name, new, payload.kinds[name])
    return out.to_bytes()


def messages(accepted: dict) -> dict[int, FromClient]:
    """The replies the loop accepted, as they came over the wire."""
    return {pid: checked.message for pid, checked in accepted.items()}


def tail_state(server: FederatedServer) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in server.split.tail.state_dict().items()}


def exchange_once(method: str, reply: FromClient, message: ToClient):
    """One exchange of the round loop with ``reply`` coming back; returns what it accepted,
    what it rejected, and whether the tail moved when the loop trained on the accepted."""
    run = small_run(method, METHODS[method])
    server = FederatedServer(run, load_data(run))
    loop = rounds_for(run)(run, Replay(reply), server=server)
    before = tail_state(server)
    accepted = loop._exchange(1, {HOSTILE: message})
    if message.num_steps:
        server.train_on(accepted, 1, message.first_step)
    after = tail_state(server)
    unchanged = all(torch.equal(before[k], after[k]) for k in before)
    return accepted, loop.rejected, unchanged, server


@pytest.mark.parametrize(
    "method, spoil, reason", [c[1:] for c in PAYLOAD_CASES], ids=[c[0] for c in PAYLOAD_CASES]
)
def test_a_hostile_payload_is_rejected_naming_the_client(method, spoil, reason, caplog):
    payload, _ = valid_reply(method)
    reply = FromClient(partition=HOSTILE, payloads=[spoil(payload)])
    accepted, rejected, unchanged, _ = exchange_once(method, reply, ToClient(1, 0, 1))
    assert accepted == {}
    ((rnd, err),) = rejected
    assert rnd == 1 and err.client == HOSTILE
    assert str(err).startswith(f"client {HOSTILE}: payload rejected: step 0: ")
    assert err.reason == str(err).split("payload rejected: ", 1)[1]
    assert re.search(reason, str(err)), str(err)
    assert unchanged, "the tail was updated with a rejected payload"
    assert f"client {HOSTILE}: payload rejected:" in caplog.text


@pytest.mark.parametrize("method", sorted(METHODS))
def test_honest_payloads_pass(method):
    payload, head = valid_reply(method)
    ok = FromClient(partition=HOSTILE, payloads=[payload])
    accepted, rejected, unchanged, _ = exchange_once(method, ok, ToClient(1, 0, 1))
    assert messages(accepted) == {HOSTILE: ok} and rejected == [] and not unchanged
    done = FromClient(partition=HOSTILE, head=head, num_examples=8)
    accepted, rejected, _, _ = exchange_once(method, done, ToClient(1, 1, 0, finish=True))
    assert messages(accepted) == {HOSTILE: done} and rejected == []


@pytest.mark.parametrize("method", list_compressors())
def test_every_registered_method_validates_its_own_payloads(method, tiny_split):
    """New methods get validation for free: the default hook must accept real payloads."""
    spec = tiny_split.spec
    params = {
        "adc": {"xi": 0.25},
        "topk": {"ratio": 0.1},
        "randtopk": {"ratio": 0.1},
        "bottlenet": {"ratio": 0.25},
        "quantization": {"bits": 3},
    }.get(method, {})
    compressor = create_compressor(method, spec, **params)
    images = torch.randn(6, 1, 8, 8)
    out = tiny_split.head(images)
    labels_ = torch.randint(0, spec.num_classes, (6,))
    plan = compressor.make_plan(out.tokens.detach(), out.cls_attention, labels_, None)
    data = compressor.encode(out.tokens, labels_, plan).payload.to_bytes()
    compressor.validate_payload(Payload.from_bytes(data), max_samples=6)
    with pytest.raises(ValueError, match="allows 1 to 2"):  # every method sends > 2 rows
        compressor.validate_payload(Payload.from_bytes(data), max_samples=2)


@pytest.mark.parametrize("mode", ["merge_only", "tokens_only"])
def test_adc_variants_validate(mode, tiny_split):
    adc = create_compressor("adc", tiny_split.spec, xi=0.25, mode=mode)
    out = tiny_split.head(torch.randn(6, 1, 8, 8))
    y = torch.randint(0, 5, (6,))
    sent = adc.encode(out.tokens, y, adc.make_plan(out.tokens.detach(), out.cls_attention, y))
    adc.validate_payload(Payload.from_bytes(sent.payload.to_bytes()), max_samples=6)


@pytest.mark.parametrize(
    "spoil, reason", [c[1:] for c in HEAD_CASES], ids=[c[0] for c in HEAD_CASES]
)
def test_a_hostile_head_upload_is_rejected(spoil, reason):
    _, head = valid_reply("identity")
    reply = FromClient(partition=HOSTILE, head=spoil(head), num_examples=8)
    accepted, rejected, _, _ = exchange_once("identity", reply, ToClient(1, 1, 0, finish=True))
    assert accepted == {}
    ((_, err),) = rejected
    assert err.client == HOSTILE and reason in str(err), str(err)


@pytest.mark.parametrize(
    "change, reason",
    [
        ({"partition": 0}, "reply claims partition 0"),
        ({"num_examples": 10**9}, "num_examples=1000000000 outside [1, 16]"),
        ({"num_examples": 0}, "num_examples=0"),
        ({"head": None}, "no head upload"),
        ({"payloads": [b"x"]}, "1 payloads in reply to a request for 0"),
    ],
)
def test_a_reply_that_does_not_answer_the_request_is_rejected(change, reason):
    _, head = valid_reply("identity")
    reply = dataclasses.replace(FromClient(partition=HOSTILE, head=head, num_examples=8), **change)
    message = ToClient(1, 1, 0, finish=True)
    run = small_run()
    server = FederatedServer(run, load_data(run))
    with pytest.raises(RejectedPayload, match=f"client {HOSTILE}: payload rejected") as info:
        server.validate(HOSTILE, message, reply)
    assert reason in str(info.value)


def test_max_payload_bytes_is_configurable_and_named():
    payload, _ = valid_reply("identity")
    run = small_run(max_payload_bytes=1000)
    server = FederatedServer(run, load_data(run))
    with pytest.raises(RejectedPayload, match=r"federation\.max_payload_bytes=1000"):
        server.validate(HOSTILE, ToClient(1, 0, 1), FromClient(HOSTILE, payloads=[payload]))
    spec = server.spec
    assert default_max_payload_bytes(spec, 8) >= 2 * spec.uncompressed_bytes(8)
    with pytest.raises(ValueError, match=r"federation\.max_payload_bytes must be >= 1"):
        small_run(max_payload_bytes=0)


class HostileTransport(InProcessTransport):
    """Client HOSTILE spoils its reply at the ``at``-th exchange (2: its step-1 payload,
    mid-round; 3: its head upload)."""

    def __init__(self, run, spoil, at: int) -> None:
        super().__init__(run)
        self.spoil, self.at, self.calls = spoil, at, 0

    def exchange(self, messages):
        self.calls += 1
        replies = super().exchange(messages)
        if self.calls == self.at and HOSTILE in replies:
            replies[HOSTILE] = self.spoil(replies[HOSTILE])
        return replies


class DropAt(InProcessTransport):
    """Client ``client`` (None: every client asked) crashes at the ``at``-th exchange."""

    def __init__(self, run, at: int, client: int | None = HOSTILE) -> None:
        super().__init__(run)
        self.at, self.client, self.calls = at, client, 0

    def exchange(self, messages):
        self.calls += 1
        replies = super().exchange(messages)
        if self.calls == self.at:
            for pid in list(replies):
                if self.client in (None, pid):
                    del replies[pid]
        return replies


@pytest.mark.parametrize(
    "at, spoil",
    [
        (2, lambda r: dataclasses.replace(r, payloads=[b"\x00" * 64])),
        (
            2,
            lambda r: dataclasses.replace(
                r, payloads=[edit(r.payloads[0], labels=with_value(labels(r.payloads[0]), 99))]
            ),
        ),
        (3, lambda r: dataclasses.replace(r, num_examples=10**6)),
    ],
    ids=["garbage-mid-round", "bad-label-mid-round", "inflated-head-weight"],
)
def test_a_run_with_a_hostile_client_equals_one_where_it_crashed(at, spoil, caplog):
    """Rejected means dropped: the result is bit-identical to the run in which that client
    crashed at the same point, so nothing of the rejected reply reached tail or heads."""
    run = small_run("adc", {"xi": 0.25}, rounds=2)
    hostile = rounds_for(run)(run, HostileTransport(run, spoil, at))
    result = hostile.run()
    crashed = rounds_for(run)(run, DropAt(run, at)).run()
    assert result.stop_reason == "rounds"
    assert [h["clients"] for h in result.history] == [2, 3]
    assert_same(result, crashed)
    assert [(rnd, e.client) for rnd, e in hostile.rejected] == [(1, HOSTILE)]
    assert f"round 1: client {HOSTILE}: payload rejected:" in caplog.text


def test_a_crashed_client_in_sl_mode_counts_and_min_clients_holds():
    run = small_run(mode="sl", rounds=2, min_train_clients=2)
    result = rounds_for(run)(run, DropAt(run, 2, client=None)).run()
    assert result.stop_reason == "rounds"
    run = small_run(mode="sl", rounds=2, min_train_clients=3)
    with pytest.raises(
        RuntimeError, match=r"round 1: only 2 of 3 clients finished.*min_train_clients=3"
    ):
        rounds_for(run)(run, DropAt(run, 2, client=None)).run()


def test_min_train_clients_above_num_clients_fails_before_training():
    with pytest.raises(ValueError, match=r"federation\.min_train_clients=5 can never be met"):
        small_run(min_train_clients=5)


# ---------------------------------------------------------------- kill and resume


def resumable_run(results_dir: str) -> RunConfig:
    """Used by the killed subprocess too: threads fixed so both processes compute alike."""
    return dataclasses.replace(
        small_run("adc", {"xi": 0.25}, rounds=4, local_steps=3),
        threads=1,
        results_dir=results_dir,
    )


KILLED_SCRIPT = """
import sys
from fedadc.federated.results import RunDirectory
from fedadc.federated.reference import train_reference
from tests.test_faults import resumable_run

run = resumable_run(sys.argv[1])
train_reference(run, results=RunDirectory.create(run, "killed"))
"""


def checkpoint_round(path: Path) -> int:
    try:
        return int(torch.load(path, weights_only=False)["round"])
    except (FileNotFoundError, EOFError, RuntimeError):
        return 0


def assert_same_run_directory(a: Path, b: Path) -> None:
    sa = torch.load(a / "checkpoint.pt", weights_only=False)
    sb = torch.load(b / "checkpoint.pt", weights_only=False)
    assert sa["global_head"] == sb["global_head"]  # serialized head: bit for bit
    for part in ("tail", "decoder"):
        assert sa[part].keys() == sb[part].keys()
        for key in sa[part]:
            assert torch.equal(sa[part][key], sb[part][key]), (part, key)
    assert sa["ledger"] == sb["ledger"] and sa["losses"] == sb["losses"]
    summary_a = json.loads((a / "summary.json").read_text())
    summary_b = json.loads((b / "summary.json").read_text())
    for key in ("bytes_up", "bytes_down", "final_accuracy", "rounds"):
        assert summary_a[key] == summary_b[key], key
    assert (a / "ledger.csv").read_text() == (b / "ledger.csv").read_text()
    rows = [json.loads(line) for line in (b / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [1, 2, 3, 4]  # no duplicate, no gap


def test_a_killed_server_resumes_to_the_uninterrupted_result(tmp_path):
    """SIGKILL the training process as soon as round 2 is checkpointed (it is then inside
    round 3), resume from the directory, and end bit-identical to an uninterrupted run."""
    run = resumable_run(str(tmp_path))
    full = RunDirectory.create(run, "full")
    train_reference(run, results=full)

    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_SCRIPT, str(tmp_path)],
        cwd=Path(__file__).parents[1],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    killed = tmp_path / "killed"
    deadline = time.monotonic() + 300
    try:
        while checkpoint_round(killed / "checkpoint.pt") < 2:
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint of round 2 in time"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    done = checkpoint_round(killed / "checkpoint.pt")
    assert 2 <= done < 4 and not (killed / "summary.json").exists()

    result = train_reference(run, results=RunDirectory(killed), resume=True)
    assert [h["round"] for h in result.history] == [1, 2, 3, 4]
    assert_same_run_directory(full.path, killed)


def test_a_kill_between_metrics_and_checkpoint_leaves_no_duplicate_round(tmp_path, monkeypatch):
    """The window the atomic checkpoint cannot close: round 3's metrics row is written,
    its checkpoint is not. Resuming must redo round 3 once, not record it twice."""
    run = resumable_run(str(tmp_path))
    full = RunDirectory.create(run, "full")
    train_reference(run, results=full)

    cut = RunDirectory.create(run, "cut")

    class KillAfterMetrics(Exception):
        pass

    original = RunDirectory.save_checkpoint

    def save_then_die(self, server, history):
        if history[-1]["round"] == 3:
            raise KillAfterMetrics  # after append_round(3), before its checkpoint
        original(self, server, history)

    with monkeypatch.context() as patch:
        patch.setattr(RunDirectory, "save_checkpoint", save_then_die)
        with pytest.raises(KillAfterMetrics):
            train_reference(run, results=cut)
    rows = (cut.path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["round"] for r in rows] == [1, 2, 3]
    train_reference(run, results=cut, resume=True)
    assert_same_run_directory(full.path, cut.path)


def test_resume_with_another_configuration_names_the_keys(tmp_path):
    run = resumable_run(str(tmp_path))
    directory = RunDirectory.create(run, "a")
    other = dataclasses.replace(run, seed=run.seed + 1)
    with pytest.raises(ValueError, match=r"seed: 0 -> 1.*may change on resume"):
        train_reference(other, results=directory, resume=True)
    with pytest.raises(FileNotFoundError, match=r"no checkpoint\.pt"):
        train_reference(run, results=directory, resume=True)
