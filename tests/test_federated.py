"""The round loop in-process: seeded, budgeted, exact under recompute, resumable."""

import dataclasses
import json
import math
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fedadc.compression import list_compressors
from fedadc.config.schema import (
    DataConfig,
    FederationConfig,
    MethodConfig,
    ModelConfig,
    PartitionConfig,
    RunConfig,
    WireConfig,
)
from fedadc.federated import FederatedClient, InProcessTransport, rounds_for
from fedadc.federated.build import client_data, load_data
from fedadc.federated.reference import train_reference
from fedadc.federated.results import RunDirectory
from fedadc.wire import Payload
from tests.partition_fingerprint import partition_fingerprint
from tests.wire_tap import WireTap, assert_ledger_matches_the_wire

MICRO = ModelConfig(
    split_at=2,
    kwargs={"patch_size": 2, "embed_dim": 32, "depth": 4, "num_heads": 2, "mlp_ratio": 2.0},
)


def make_run(**federation: object) -> RunConfig:
    fed = {
        "num_clients": 4,
        "rounds": 2,
        "local_steps": 3,
        "batch_size": 16,
        "budget_epochs": None,
        **federation,
    }
    return RunConfig(model=MICRO, federation=FederationConfig(**fed))


def head_weights(result) -> dict[str, torch.Tensor]:
    return Payload.from_bytes(result.server.global_head).tensors


def assert_same(a, b) -> None:
    assert a.server.ledger.total_bytes() == b.server.ledger.total_bytes()
    wa, wb = head_weights(a), head_weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], rtol=0, atol=0, msg=key)
    for pa, pb in zip(
        a.server.split.tail.parameters(), b.server.split.tail.parameters(), strict=True
    ):
        torch.testing.assert_close(pa, pb, rtol=0, atol=0)


def test_same_seed_same_result_and_cache_never_changes_it():
    run = make_run()
    cached = train_reference(run)
    again = train_reference(run)
    uncached = train_reference(run, use_cache=False)
    assert_same(cached, again)
    assert_same(cached, uncached)
    assert len(cached.history) == 2 and cached.stop_reason == "rounds"


def test_sfl_counts_every_message_and_learns():
    run = dataclasses.replace(
        make_run(rounds=8, local_steps=10),
        method=MethodConfig("identity", {}),
        partition=PartitionConfig(kind="iid"),
    )
    result = train_reference(run)
    ledger = result.server.ledger
    by_kind = ledger.bytes_by_kind()
    head_bytes = len(result.server.global_head)
    # every round: each of 4 clients downloads and uploads the head
    assert by_kind["down"]["weights"] + by_kind["down"]["header"] > 0
    ups = [r for r in ledger.records if r.direction == "up" and r.bytes_by_kind.get("weights")]
    assert len(ups) == 8 * 4 and all(r.total_bytes == head_bytes for r in ups)
    steps = [r for r in ledger.records if r.direction == "up" and r.baseline_bytes]
    assert len(steps) == 8 * 4 * 10
    assert result.final_accuracy > 0.3  # chance is 0.1


def test_sl_mode_relays_the_head_without_averaging():
    run = make_run(mode="sl", rounds=1)
    result = train_reference(run)
    # clients in turn: each downloads the head the previous one uploaded
    downs = [
        r
        for r in result.server.ledger.records
        if r.direction == "down" and r.bytes_by_kind.get("weights")
    ]
    ups = [
        r
        for r in result.server.ledger.records
        if r.direction == "up" and r.bytes_by_kind.get("weights")
    ]
    assert len(downs) == len(ups) == 4
    assert [r.client for r in downs] == [r.client for r in ups]


def test_budget_stops_before_it_is_exceeded():
    run = make_run(rounds=50, budget_epochs=0.5)
    result = train_reference(run)
    server = result.server
    assert result.stop_reason == "budget"
    assert server.spent() <= server.budget_bytes()


def test_steps_per_message_batches_payloads_and_stays_seeded():
    run = make_run(steps_per_message=0)  # all local steps in one message
    one = train_reference(run)
    two = train_reference(run, use_cache=False)
    assert_same(one, two)
    # same samples and bytes of activations as S = 1, fewer messages
    exact = train_reference(make_run())
    kinds = ("activations", "labels")
    for kind in kinds:
        assert (
            one.server.ledger.bytes_by_kind()["up"][kind]
            == exact.server.ledger.bytes_by_kind()["up"][kind]
        )
    # one round trip per message: 1 + 1 exchanges per round instead of 1 + local_steps
    counting = CountingTransport(run)
    rounds_for(run)(run, counting).run()
    assert counting.calls == 2 * 2


class CountingTransport(InProcessTransport):
    def __init__(self, run):
        super().__init__(run)
        self.calls = 0

    def exchange(self, messages):
        self.calls += 1
        return super().exchange(messages)


def test_resume_ends_where_an_uninterrupted_run_ends(tmp_path):
    run = dataclasses.replace(make_run(rounds=3), results_dir=str(tmp_path))
    full = train_reference(run, results=RunDirectory.create(run, "full"))
    partial_dir = RunDirectory.create(dataclasses.replace(run), "partial")
    train_reference(
        dataclasses.replace(run, federation=dataclasses.replace(run.federation, rounds=2)),
        results=partial_dir,
    )
    resumed = train_reference(run, results=partial_dir, resume=True)
    assert_same(full, resumed)
    assert [h["round"] for h in resumed.history] == [1, 2, 3]
    assert (partial_dir.path / "summary.json").exists()
    assert (partial_dir.path / "accuracy_vs_bytes.png").stat().st_size > 1000
    lines = (partial_dir.path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 3


class FlakyTransport(CountingTransport):
    """Client 1 dies in the middle of round 1."""

    def exchange(self, messages):
        replies = super().exchange(messages)
        if self.calls == 2:
            replies.pop(1, None)
        return replies


def test_a_client_that_dies_mid_round_is_dropped_and_the_run_goes_on(caplog):
    run = make_run()
    loop = rounds_for(run)(run, FlakyTransport(run))
    result = loop.run()
    assert result.stop_reason == "rounds"
    assert result.history[0]["clients"] == 3 and result.history[1]["clients"] == 4
    assert "failed and are dropped" in caplog.text


def test_too_few_clients_left_is_a_clear_error():
    run = dataclasses.replace(
        make_run(), federation=dataclasses.replace(make_run().federation, min_train_clients=4)
    )
    with pytest.raises(RuntimeError, match="min_train_clients=4"):
        rounds_for(run)(run, FlakyTransport(run)).run()


@pytest.mark.parametrize(
    "method, params",
    [
        ("topk", {"ratio": 0.1}),
        ("bottlenet", {"ratio": 0.25}),
        ("quantization", {"bits": 4}),
        ("c3sl", {"group_size": 2}),
    ],
)
def test_every_method_runs_a_round(method, params):
    run = dataclasses.replace(make_run(rounds=1), method=MethodConfig(method, params))
    result = train_reference(run)
    assert math.isfinite(result.history[0]["test_loss"])
    assert result.server.ledger.realised_xi() < 1


def test_partition_sizes_and_data_are_shared_by_every_process():
    """A fresh process (as a Flower client is) builds the same partitions, row for row and
    byte for byte; together they split the training set without overlap."""
    run = make_run()
    data = load_data(run)
    assert data.num_classes == 10 and len(data.train) == 1437
    here = partition_fingerprint(run)
    other = subprocess.run(
        [sys.executable, "-m", "tests.partition_fingerprint"],
        input=pickle.dumps(run),
        cwd=Path(__file__).parents[1],
        capture_output=True,
        timeout=120,
    )
    assert other.returncode == 0, other.stderr.decode()[-3000:]
    assert json.loads(other.stdout.decode().splitlines()[-1]) == here

    sizes = [part["size"] for part in here]
    assert len(sizes) == run.federation.num_clients and min(sizes) >= 1
    assert sum(sizes) == len(data.train)
    rows = torch.cat([torch.tensor(part["rows"], dtype=torch.long) for part in here])
    assert torch.equal(rows.sort().values, torch.arange(len(data.train)))  # disjoint, complete
    for pid, part in enumerate(here):
        own = torch.tensor(part["rows"], dtype=torch.long)
        assert torch.equal(client_data(run, pid).labels, data.train.labels[own])


@pytest.mark.parametrize(
    "writer, source",
    [
        ("write_disk_dataset", "disk"),
        ("write_imagefolder", "imagefolder"),
        ("write_parquet", "parquet"),
    ],
)
def test_trains_on_local_datasets_in_every_format(tmp_path, writer, source):
    from fedadc.config.schema import DataConfig
    from tests import data_factory

    path = getattr(data_factory, writer)(tmp_path)
    run = dataclasses.replace(
        make_run(num_clients=2, rounds=2, local_steps=2, batch_size=8),
        data=DataConfig(source=source, path=str(path)),
        method=MethodConfig("adc", {"xi": 0.25}),
    )
    result = train_reference(run)
    data = load_data(run)
    assert data.num_classes == 3 and data.image_shape == (3, 12, 12)
    assert len(result.history) == 2 and math.isfinite(result.history[-1]["test_loss"])
    assert result.server.ledger.realised_xi() < 0.3


METHOD_PARAMS = {
    "identity": {},
    "adc": {"xi": 0.25},
    "quantization": {"bits": 4},
    "topk": {"ratio": 0.1},
    "randtopk": {"ratio": 0.1},
    "c3sl": {"group_size": 2},
    "bottlenet": {"ratio": 0.25},
}


def method_run(method: str, **federation: object) -> RunConfig:
    """One round of two clients on a micro ViT with ``method``."""
    fed = {"num_clients": 2, "rounds": 1, "batch_size": 8, **federation}
    return dataclasses.replace(
        make_run(**fed),
        method=MethodConfig(method, METHOD_PARAMS[method]),
        data=DataConfig(max_test_samples=64),
    )


BUILT_IN = list_compressors()
"""The methods fedadc registers (read at collection, before any test registers its own)."""


def test_every_registered_method_has_test_params():
    assert set(METHOD_PARAMS) == set(BUILT_IN)


@pytest.mark.parametrize("method", BUILT_IN)
@pytest.mark.parametrize(
    "steps",
    [
        {"local_steps": 2},
        {"local_steps": 4, "steps_per_message": 2},
        {"local_steps": 4, "steps_per_message": 2, "head_update": "stale"},
    ],
    ids=["S=1", "S=2", "S=2-stale"],
)
def test_stateful_client_equals_the_in_memory_one_bit_for_bit(method, steps, monkeypatch):
    """The client restored from its state bytes (recompute + plan replay for every
    gradient) drives the same SplitClient to the same weights as the one kept in memory."""
    run = method_run(method, **steps)
    replayed: list[int] = []
    replay = FederatedClient._replay

    def counting(self, split, round_, step):
        replayed.append(step)
        return replay(self, split, round_, step)

    monkeypatch.setattr(FederatedClient, "_replay", counting)
    in_memory = train_reference(run)
    assert replayed == []  # the live SplitClient kept every pending graph
    stateful = train_reference(run, use_cache=False)
    assert len(replayed) == 2 * steps["local_steps"]  # every step of both clients replayed
    assert_same(in_memory, stateful)


@pytest.mark.parametrize("method, labels", [("adc", "float16"), ("identity", "int16")])
def test_wire_format_is_applied_by_the_encoder_and_the_ledger_counts_what_was_sent(method, labels):
    run = dataclasses.replace(
        method_run(method, local_steps=2),
        wire=WireConfig(soft_label_dtype="float16", hard_label_dtype="int16"),
    )
    tap = WireTap(run)
    result = rounds_for(run)(run, tap).run()
    assert_ledger_matches_the_wire(result.server.ledger, tap.sent)
    assert tap.label_dtypes("up") == {labels}  # labels travel in the run's wire format
    assert_same(result, train_reference(run))


def test_the_server_decodes_each_upload_once(monkeypatch):
    """Validation decodes a reply; the tail trains on, and FedAvg averages, what it decoded."""
    run = method_run("adc", local_steps=2)
    tap = WireTap(run)
    decoded: list[bytes] = []
    decode = Payload.from_bytes

    def counting(data):
        decoded.append(bytes(data))
        return decode(data)

    monkeypatch.setattr(Payload, "from_bytes", counting)
    rounds_for(run)(run, tap).run()
    assert tap.sent["up"]
    for data in tap.sent["up"]:  # step payloads and head uploads
        assert decoded.count(data) == 1


def test_the_round_loop_pins_the_runs_thread_count_and_restores_it():
    """Any caller of ``rounds_for(run)(...).run()`` (benchmarks, tests, the apps) gets
    ``run.threads`` inside the loop: CPU results depend on it."""

    class ThreadsSeen(InProcessTransport):
        def __init__(self, run):
            super().__init__(run)
            self.seen: set[int] = set()

        def exchange(self, messages):
            self.seen.add(torch.get_num_threads())
            return super().exchange(messages)

    before = torch.get_num_threads()
    other = 1 if before != 1 else 2
    run = dataclasses.replace(make_run(rounds=1, local_steps=1), threads=other)
    transport = ThreadsSeen(run)
    rounds_for(run)(run, transport).run()
    assert transport.seen == {other}
    assert torch.get_num_threads() == before
