"""Hostile or broken replies are rejected naming the client and the tail never sees them:
every spoiled payload and head upload, honest payloads of every method, ADC's variants,
replies that do not answer the request, and the payload size limit (in-process; the run
going on without the client: test_faults.py; Flower: test_flower_faults.py).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re

import pytest
import torch

from fedadc.compression import adc_math, create_compressor, list_compressors
from fedadc.federated import InProcessTransport, rounds_for
from fedadc.federated.build import load_data
from fedadc.federated.server import FederatedServer
from fedadc.federated.validation import RejectedPayload, default_max_payload_bytes
from fedadc.wire import Payload
from fedadc.wire.messages import FromClient, ToClient
from fedadc.wire.payload import PayloadError
from tests.fault_support import (
    HOSTILE,
    INT8_PAYLOAD_CASES,
    METHODS,
    acts,
    as_int8,
    edit,
    labels,
    small_run,
    with_value,
)


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
PAYLOAD_CASES += INT8_PAYLOAD_CASES

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


@pytest.mark.parametrize("method", ["identity", "adc"])
def test_honest_int8_payloads_pass_and_train_the_tail(method):
    payload, _ = valid_reply(method)
    ok = FromClient(partition=HOSTILE, payloads=[as_int8(payload)])
    accepted, rejected, unchanged, _ = exchange_once(method, ok, ToClient(1, 0, 1))
    assert messages(accepted) == {HOSTILE: ok} and rejected == [] and not unchanged


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
    """Each variant's honest payload passes and has the shape its mode means (merge_only:
    T merged rows of all n tokens with soft labels; tokens_only: every sample, k tokens,
    hard labels); a spoiled one is rejected naming the problem."""
    spec, batch, xi = tiny_split.spec, 6, 0.25
    adc = create_compressor("adc", spec, xi=xi, mode=mode)
    out = tiny_split.head(torch.randn(batch, 1, 8, 8))
    y = torch.randint(0, 5, (batch,))
    plan = adc.make_plan(out.tokens.detach(), out.cls_attention, y)
    data = adc.encode(out.tokens, y, plan).payload.to_bytes()
    adc.validate_payload(Payload.from_bytes(data), max_samples=batch)

    if mode == "merge_only":  # all of xi goes to the batch: T = max(2, floor(xi * B))
        rows, k = adc_math.num_clusters(xi, batch), spec.num_tokens
    else:  # all of xi goes to the tokens: k = floor(xi * n), CLS included
        rows, k = batch, adc_math.num_kept_tokens(xi, spec.num_tokens, spec.num_prefix_tokens)
    assert (rows < batch, k < spec.num_tokens) == (mode == "merge_only", mode == "tokens_only")
    assert plan["kept_tokens"].shape == (rows, k)
    received = Payload.from_bytes(data)
    assert received["activations"].shape == (rows, k, spec.dim)
    assert received.batch_size == batch
    if mode == "merge_only":
        soft = received["labels"]
        assert soft.is_floating_point() and soft.shape == (rows, spec.num_classes)
        torch.testing.assert_close(soft.sum(dim=1), torch.ones(rows))
    else:
        assert torch.equal(received["labels"], y)

    extra = torch.arange(batch + 1) % rows  # one row more than the batch allows
    spoiled = [
        (
            edit(data, activations=acts(data)[extra], labels=labels(data)[extra]),
            f"payload has {batch + 1} rows for {batch + 1} samples; "
            f"the batch size allows 1 to {batch}",
        ),
        (edit(data, activations=with_value(acts(data), math.nan)), "contain NaN or Inf"),
    ]
    for bad, reason in spoiled:
        with pytest.raises(PayloadError, match=reason):
            adc.validate_payload(Payload.from_bytes(bad), max_samples=batch)


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
