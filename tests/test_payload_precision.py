"""Payload precision (``wire.activation_dtype`` / ``wire.gradient_dtype``): what the
receiver decodes is within each dtype's error bound of the float32 tensor, the ledger
counts the bytes as serialized (int8 scales included in realised xi), and a split step
computes exactly the straight-through graph of ``fedadc/wire/precision.py``."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import safetensors.numpy
import torch
import torch.nn.functional as F

from fedadc.compression import create_compressor
from fedadc.config import compose
from fedadc.config.schema import WireConfig
from fedadc.federated import rounds_for
from fedadc.federated.reference import train_reference
from fedadc.step import SplitClient, SplitServer
from fedadc.wire import Kind, Ledger, Payload, WireFormat
from fedadc.wire.precision import round_trip
from tests.conftest import make_tiny_split
from tests.test_federated import assert_same, method_run
from tests.wire_tap import WireTap, assert_ledger_matches_the_wire, serialized_sizes

DTYPES = ("float32", "float16", "bfloat16", "int8")


def reference_round_trip(x: torch.Tensor, dtype: str) -> torch.Tensor:
    """Independent truth: torch's own casts, and int8 written from its definition."""
    if dtype == "float32":
        return x
    if dtype in ("float16", "bfloat16"):
        return x.to(getattr(torch, dtype)).float()
    scale = x.abs().amax(dim=-1, keepdim=True) / 127
    q = torch.round(x / torch.where(scale > 0, scale, 1)).clamp(-127, 127)
    return q * scale


def sent_and_received(x: torch.Tensor, kind: Kind, dtype: str) -> tuple[bytes, torch.Tensor]:
    name = kind.value
    payload = Payload().add(name, x, kind)
    payload.wire = WireFormat(
        activation_dtype=dtype if kind is Kind.ACTIVATIONS else "float32",
        gradient_dtype=dtype if kind is Kind.GRADIENTS else "float32",
    )
    data = payload.to_bytes()
    received = Payload.from_bytes(data)
    assert set(received.tensors) == {name}  # an int8 scale is consumed by the decoder
    assert received[name].dtype == torch.float32 and received[name].shape == x.shape
    return data, received[name]


def spread_rows(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """Non-zero values from 1e-3 to 300, rows of different magnitudes: float16's normal range."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=gen).clamp(min=-3, max=3)
    x = torch.where(x.abs() < 1e-2, torch.full_like(x, 0.5), x)
    return x * 10 ** torch.empty(*shape[:-1], 1).uniform_(-1, 2, generator=gen)


@pytest.mark.parametrize("kind", [Kind.ACTIVATIONS, Kind.GRADIENTS])
@pytest.mark.parametrize("dtype, relative", [("float16", 2**-11), ("bfloat16", 2**-8)])
def test_float_precisions_round_to_nearest_within_their_relative_error(kind, dtype, relative):
    x = spread_rows((4, 9, 16))
    _, got = sent_and_received(x, kind, dtype)
    assert torch.equal(got, reference_round_trip(x, dtype))
    assert ((got - x).abs() <= relative * x.abs()).all()
    assert not torch.equal(got, x)  # the bound is met by a real rounding, not by float32


@pytest.mark.parametrize("kind", [Kind.ACTIVATIONS, Kind.GRADIENTS])
def test_int8_error_is_at_most_half_a_step_of_each_row(kind):
    x = spread_rows((4, 9, 16))
    x[0, 0] = 0.0  # an all-zero row: scale 0, decoded exactly
    x[1, 2, 3] = -x[1, 2].abs().max() * 1.5  # a row whose extreme is negative
    _, got = sent_and_received(x, kind, "int8")
    step = x.abs().amax(dim=-1, keepdim=True) / 127
    assert ((got - x).abs() <= step / 2 * (1 + 1e-5)).all()
    assert torch.equal(got[0, 0], torch.zeros(16))
    torch.testing.assert_close(got[1, 2, 3], x[1, 2, 3], rtol=1e-6, atol=0)  # -127 steps
    torch.testing.assert_close(got, reference_round_trip(x, "int8"), rtol=0, atol=0)


def test_round_trip_is_what_the_payload_decodes():
    x = spread_rows((3, 5, 8), seed=1)
    for dtype in DTYPES:
        assert torch.equal(round_trip(x, dtype), sent_and_received(x, Kind.ACTIVATIONS, dtype)[1])


@pytest.mark.parametrize(
    "dtype, row_bytes", [("float32", 32), ("float16", 16), ("bfloat16", 16), ("int8", 12)]
)
def test_the_ledger_counts_the_serialized_bytes_and_realised_xi_includes_scales(dtype, row_bytes):
    """B x n x d = 2 x 5 x 8 each way: 8 bytes of codes + a 4-byte float32 scale per int8
    row (12 of float32's 32 bytes), all of it counted as activation / gradient bytes."""
    ledger, sent = Ledger(), []
    base = 2 * 5 * 8 * 4
    wire = WireFormat(activation_dtype=dtype, gradient_dtype=dtype)
    up = Payload(wire=wire).add("activations", torch.randn(2, 5, 8), Kind.ACTIVATIONS)
    up.add("labels", torch.tensor([0, 1]), Kind.LABELS)
    down = Payload(wire=wire).add("gradients", torch.randn(2, 5, 8), Kind.GRADIENTS)
    sent.append(ledger.transmit(up, direction="up", baseline_bytes=base))
    sent.append(ledger.transmit(down, direction="down"))
    by_kind = ledger.bytes_by_kind()
    assert by_kind["up"]["activations"] == by_kind["down"]["gradients"] == 10 * row_bytes
    assert by_kind["up"]["labels"] == 2 * 8  # labels keep their own wire dtype
    assert by_kind["up"] == serialized_sizes(sent[:1])  # the header's own entries
    assert ledger.total_bytes() == sum(len(d) for d in sent)
    assert math.isclose(ledger.realised_xi(), row_bytes / 32)


def test_float32_payloads_keep_their_bytes_and_other_kinds_are_untouched():
    """The default writes no precision map (earlier versions' bytes); integer tensors of
    kind activations (quantization's codes), indices and soft labels never change."""
    payload = Payload().add("activations", torch.randn(2, 3, 4), Kind.ACTIVATIONS)
    assert payload.to_bytes() == payload.to_bytes(WireFormat(activation_dtype="float32"))
    assert b"precision" not in payload.to_bytes()
    other = Payload().add("activations", torch.arange(24, dtype=torch.uint8), Kind.ACTIVATIONS)
    other.add("indices", torch.arange(5), Kind.INDICES)
    other.add("labels", torch.full((2, 4), 0.25), Kind.LABELS)
    other.add("scales", torch.tensor([0.1, 0.2]), Kind.SCALES)
    int8 = WireFormat(activation_dtype="int8", gradient_dtype="int8")
    assert other.to_bytes(int8) == other.to_bytes()


def test_a_name_clash_with_the_scale_is_refused():
    payload = Payload().add("activations", torch.randn(2, 3), Kind.ACTIVATIONS)
    payload.add("activations.scale", torch.zeros(2), Kind.SCALES)
    with pytest.raises(ValueError, match=r"\['activations.scale'\] are reserved"):
        payload.to_bytes(WireFormat(activation_dtype="int8"))


class StraightThrough(torch.autograd.Function):
    """Forward: the activation as the receiver decodes it; backward: the gradient as the
    client decodes it, passed straight through the activation quantiser."""

    @staticmethod
    def forward(ctx, x, activation_dtype, gradient_dtype):
        ctx.gradient_dtype = gradient_dtype
        return reference_round_trip(x.detach(), activation_dtype)

    @staticmethod
    def backward(ctx, grad):
        return reference_round_trip(grad, ctx.gradient_dtype), None, None


PARAMS = {"identity": {}, "adc": {"xi": 0.3}, "topk": {"ratio": 0.2}, "bottlenet": {"ratio": 0.25}}


@pytest.mark.parametrize("method", sorted(PARAMS))
@pytest.mark.parametrize(
    "activation_dtype, gradient_dtype",
    [("float32", "float32"), ("int8", "float32"), ("float16", "bfloat16"), ("int8", "int8")],
)
def test_split_step_equals_the_straight_through_graph(method, activation_dtype, gradient_dtype):
    """SplitClient / SplitServer through bytes in the given precisions: the tail's gradients
    are those of the tail evaluated on the dequantised activations, the head's are autograd
    of the unsplit model through the straight-through quantiser (with float32 gradients:
    exactly the gradient w.r.t. the dequantised activation, applied to what was sent)."""
    torch.manual_seed(0)
    split = make_tiny_split(split_at=2)
    compressor = create_compressor(method, split.spec, **PARAMS[method])
    wire = WireFormat(activation_dtype=activation_dtype, gradient_dtype=gradient_dtype)
    head_opt = torch.optim.SGD([*split.head.parameters(), *compressor.encoder.parameters()], lr=0)
    tail_opt = torch.optim.SGD([*split.tail.parameters(), *compressor.decoder.parameters()], lr=0)
    client = SplitClient(
        split.head, compressor, head_opt, torch.Generator().manual_seed(0), wire=wire
    )
    server = SplitServer(split.tail, compressor, tail_opt, wire=wire)
    images, labels = torch.randn(8, 1, 8, 8), torch.randint(0, 5, (8,))

    up = client.forward(images, labels).to_bytes()
    plan, sent = client.pending[0].plan, client.pending[0].encoded.sent
    gradient, metrics = server.step(Payload.from_bytes(up))
    received = Payload.from_bytes(up)["activations"]
    assert torch.equal(received, reference_round_trip(sent.detach(), activation_dtype))
    assert torch.equal(received, sent.detach()) == (activation_dtype == "float32")
    client.backward(Payload.from_bytes(gradient.to_bytes()))
    params = [*split.head.parameters(), *compressor.parameters(), *split.tail.parameters()]
    split_grads = [p.grad.clone() if p.grad is not None else None for p in params]

    for p in params:
        p.grad = None
    out = split.head(images)
    enc = compressor.encode(out.tokens, labels, plan)
    leaf = StraightThrough.apply(enc.sent, activation_dtype, gradient_dtype)
    logits = split.tail(compressor.decoder_forward(leaf, enc.payload))
    loss = F.cross_entropy(logits, enc.payload["labels"])
    loss.backward()
    assert metrics.loss == pytest.approx(loss.item(), rel=1e-6)
    for p, mine in zip(params, split_grads, strict=True):
        assert (mine is None) == (p.grad is None)
        if mine is not None:
            assert torch.isfinite(mine).all()
            torch.testing.assert_close(mine, p.grad, rtol=1e-4, atol=1e-6)


def test_a_run_counts_every_byte_in_its_precision_and_equals_the_reference():
    """In-process ADC with int8 activations and bfloat16 gradients: the ledger's per-kind
    counts are the serialized tensors', the uplink holds int8 codes and per-row scales,
    the downlink bfloat16 bits, and the result is the in-process reference's bit for bit."""
    run = dataclasses.replace(
        method_run("adc", local_steps=2),
        wire=WireConfig(activation_dtype="int8", gradient_dtype="bfloat16"),
    )
    tap = WireTap(run)
    result = rounds_for(run)(run, tap).run()
    assert_ledger_matches_the_wire(result.server.ledger, tap.sent)
    up = [safetensors.numpy.load(d) for d in tap.sent["up"]]
    steps = [arrays for arrays in up if "activations" in arrays]
    assert len(steps) == 2 * 2  # two clients, two steps each
    assert all(a["activations"].dtype == np.int8 for a in steps)
    assert all(a["activations.scale"].shape == a["activations"].shape[:-1] for a in steps)
    down = [safetensors.numpy.load(d) for d in tap.sent["down"]]
    assert {a["gradients"].dtype for a in down if "gradients" in a} == {np.dtype(np.uint16)}
    assert_same(result, train_reference(run))


def test_hydra_keys_and_a_bad_dtype_names_the_key_and_the_choices():
    run = compose(["wire.activation_dtype=int8", "wire.gradient_dtype=bfloat16"])
    assert (run.wire.activation_dtype, run.wire.gradient_dtype) == ("int8", "bfloat16")
    assert WireFormat.from_config(run.wire).activation_dtype == "int8"
    assert compose([]).wire.activation_dtype == "float32"
    for key in ("activation_dtype", "gradient_dtype"):
        with pytest.raises(ValueError, match=rf"wire\.{key} must be one of") as info:
            compose([f"wire.{key}=int4"])
        assert all(d in str(info.value) for d in DTYPES) and "'int4'" in str(info.value)
    with pytest.raises(ValueError, match=r"WireFormat\.gradient_dtype must be one of"):
        WireFormat(gradient_dtype="float64")
