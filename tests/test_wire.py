"""Bytes are counted as the serialized size; the ledger adds up."""

import json
import math

import numpy as np
import pytest
import safetensors.numpy
import torch

from fedadc.wire import Kind, Ledger, Payload, PayloadError, WireFormat, bytes_by_kind


def _payload() -> Payload:
    g = torch.Generator().manual_seed(0)
    p = Payload(batch_size=4)
    p.add("activations", torch.randn(4, 5, 6, generator=g), Kind.ACTIVATIONS)
    p.add("labels", torch.tensor([0, 3, 2, 1]), Kind.LABELS)
    p.add("indices", torch.arange(7, dtype=torch.int32), Kind.INDICES)
    return p


def test_round_trip_keeps_tensors_dtypes_kinds_and_meta():
    p = _payload()
    p.meta["note"] = "x"
    q = Payload.from_bytes(p.to_bytes())
    assert q.meta == {"note": "x"} and q.batch_size == 4
    assert q.kinds == p.kinds
    for name, tensor in p.tensors.items():
        assert q[name].dtype == tensor.dtype
        assert torch.equal(q[name], tensor)


def test_bytes_by_kind_sum_to_serialized_size_and_match_raw_buffers():
    p = _payload()
    data = p.to_bytes()
    sizes = bytes_by_kind(data)
    assert sum(sizes.values()) == len(data)
    assert sizes["activations"] == 4 * 5 * 6 * 4
    assert sizes["labels"] == 4 * 8
    assert sizes["indices"] == 7 * 4
    assert 0 < sizes["header"] < 400  # names, shapes, dtypes, kinds as JSON


def test_label_wire_dtypes_shrink_labels_and_restore_dtypes():
    hard = Payload().add("labels", torch.tensor([1, 2, 3]), Kind.LABELS)
    soft = Payload().add("labels", torch.tensor([[0.25, 0.75]]), Kind.LABELS)
    small = WireFormat(soft_label_dtype="float16", hard_label_dtype="int16")
    for payload, saved in ((hard, 3 * 6), (soft, 2 * 2)):
        wide, narrow = payload.to_bytes(), payload.to_bytes(small)
        assert bytes_by_kind(wide)["labels"] - bytes_by_kind(narrow)["labels"] == saved
    back = Payload.from_bytes(hard.to_bytes(small))["labels"]
    assert back.dtype == torch.int64 and back.tolist() == [1, 2, 3]
    back = Payload.from_bytes(soft.to_bytes(small))["labels"]
    assert back.dtype == torch.float32 and back.tolist() == [[0.25, 0.75]]


def test_identical_payloads_are_identical_bytes():
    assert _payload().to_bytes() == Payload.from_bytes(_payload().to_bytes()).to_bytes()


@pytest.mark.parametrize(
    "data", [b"", b"\x01\x02", b"\xff" * 8 + b"{}", b"\x04\x00\x00\x00\x00\x00\x00\x00nope"]
)
def test_malformed_bytes_raise_payload_error(data):
    with pytest.raises(PayloadError, match="malformed payload"):
        Payload.from_bytes(data)


def test_missing_tensor_names_what_is_there():
    with pytest.raises(PayloadError, match="no tensor 'gradients'"):
        _payload()["gradients"]


def test_invalid_wire_format_is_a_clear_error():
    with pytest.raises(ValueError, match="soft_label_dtype"):
        WireFormat(soft_label_dtype="int8")


def test_ledger_totals_equal_the_sum_of_messages_and_ratios_follow_the_paper():
    ledger = Ledger()
    base = 4 * 5 * 6 * 4
    sent = []
    for step in range(3):
        up = Payload().add("activations", torch.randn(2, 5, 6), Kind.ACTIVATIONS)
        up.add("labels", torch.tensor([0, 1]), Kind.LABELS)
        down = Payload().add("gradients", torch.randn(2, 5, 6), Kind.GRADIENTS)
        sent.append(
            ledger.transmit(up, direction="up", step=step, baseline_bytes=base, nominal_xi=0.5)
        )
        sent.append(ledger.transmit(down, direction="down", step=step))
    assert ledger.total_bytes() == sum(len(d) for d in sent)
    by_kind = ledger.bytes_by_kind()
    assert sum(by_kind["up"].values()) + sum(by_kind["down"].values()) == ledger.total_bytes()
    assert ledger.total_bytes("up", Kind.ACTIVATIONS) == 3 * 2 * 5 * 6 * 4
    assert math.isclose(ledger.realised_xi(), 0.5)  # half the batch each way
    assert ledger.all_in_ratio() > ledger.realised_xi()  # labels and headers cost extra
    assert math.isclose(ledger.nominal_xi(), 0.5)
    assert ledger.summary()["messages"] == 6


def test_the_ledger_splits_the_bytes_that_were_sent_not_a_reserialization():
    """5 x 10 x 8 activations + 5 x 10 soft labels. The ledger reads the split from the
    bytes' own header: labels sent as float32 count 200 B (a ledger that assumed float16
    counted 100 B and moved the other 100 B into the header, 380 B instead of 280 B)."""
    payload = Payload().add("activations", torch.zeros(5, 10, 8), Kind.ACTIVATIONS)
    payload.add("labels", torch.full((5, 10), 0.1), Kind.LABELS)
    ledger = Ledger()
    ledger.record(payload.to_bytes(), direction="up")
    assert ledger.records[0].bytes_by_kind == {"activations": 1600, "labels": 200, "header": 280}
    payload.wire = WireFormat(soft_label_dtype="float16")  # the encoder's format
    data = ledger.transmit(payload, direction="up")
    assert Payload.from_bytes(data)["labels"].dtype == torch.float32  # cast back on receipt
    assert ledger.records[1].bytes_by_kind == {"activations": 1600, "labels": 100, "header": 304}
    assert ledger.records[1].total_bytes == len(data) == 2004


def _with_meta(meta: dict[str, str]) -> bytes:
    """A payload's bytes written by hand, with ``meta`` as its metadata map."""
    header = {"kinds": {"x": "activations"}, "dtypes": {}, "meta": meta}
    arrays = {"x": np.zeros(1, dtype=np.float32)}
    return safetensors.numpy.save(arrays, metadata={"fedadc": json.dumps(header, sort_keys=True)})


def test_batch_size_is_typed_and_parsed_once():
    data = Payload(batch_size=7).add("x", torch.zeros(1), Kind.ACTIVATIONS).to_bytes()
    assert data == _with_meta({"batch_size": "7"})  # same bytes on the wire as before
    back = Payload.from_bytes(data)
    assert back.batch_size == 7 and back.meta == {}
    assert Payload.from_bytes(_with_meta({})).batch_size is None
    with pytest.raises(ValueError, match=r"set Payload\.batch_size"):
        Payload(meta={"batch_size": "7"}).to_bytes()
    for bad in ("0", "-3", "7.5", "seven", "", "²"):
        with pytest.raises(PayloadError, match=r"batch_size .* is not a positive integer"):
            Payload.from_bytes(_with_meta({"batch_size": bad}))
