"""`flwr run .` (a real local SuperLink and simulation) equals the in-process reference.

Each test run uses its own FLWR_HOME, so its SuperLink is private and is stopped at the
end. Slow (Ray start-up), so the runs are few and tiny.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from fedadc.config import compose
from fedadc.federated import rounds_for
from fedadc.federated.build import load_data
from fedadc.federated.reference import train_reference
from fedadc.federated.results import RunDirectory
from fedadc.federated.server import FederatedServer
from fedadc.federated.timing import TIMING_FIELDS
from fedadc.wire import Payload
from strategies.run_config import overrides_from_flower
from tests.flower_support import TINY_RUN, assert_run_equals_the_reference
from tests.wire_tap import WireTap, assert_ledger_matches_the_wire

pytestmark = pytest.mark.skipif(shutil.which("flwr") is None, reason="flwr CLI not installed")


def test_flower_simulation_equals_the_in_process_reference(flower, tmp_path):
    """1 worker with fast-sim (the default) and 2 workers with Flower's stock polling
    (fast-sim=false): both bit-identical to the reference, so fast-sim changes no result."""
    run = compose(overrides_from_flower(TINY_RUN))
    reference = train_reference(run)
    summaries = []
    for workers, fast in ((1, True), (2, False)):
        out = tmp_path / f"w{workers}"
        out.mkdir()
        run_dir, stdout = flower.run(out, workers=workers, extra=f"fast-sim={str(fast).lower()}")
        assert "round   2" in stdout  # progress lines reach the user
        patched = "fast-sim: Flower's simulation poll waits set to 0.002 s" in stdout
        assert patched == fast
        summary = json.loads((run_dir / "summary.json").read_text())
        server = FederatedServer(run, load_data(run))
        RunDirectory(run_dir).load_checkpoint(server)
        assert summary["bytes_up"] == reference.server.ledger.total_bytes("up")
        assert summary["bytes_down"] == reference.server.ledger.total_bytes("down")
        ours = Payload.from_bytes(server.global_head).tensors
        ref = Payload.from_bytes(reference.server.global_head).tensors
        for key in ref:  # bit-identical: same seed, same threads, fixed aggregation order
            torch.testing.assert_close(ours[key], ref[key], rtol=0, atol=0, msg=key)
        for a, b in zip(
            server.split.tail.parameters(), reference.server.split.tail.parameters(), strict=True
        ):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
        rows = (run_dir / "metrics.jsonl").read_text().splitlines()
        assert [_untimed(json.loads(r)) for r in rows] == [_untimed(r) for r in reference.history]
        summaries.append(summary)
    assert summaries[0]["final_accuracy"] == summaries[1]["final_accuracy"]


def _untimed(row: dict) -> str:
    """A metrics row without the fields read off a clock, as canonical JSON (NaN == NaN)."""
    assert row.keys() >= TIMING_FIELDS  # recorded in both runs, left out of the comparison
    return json.dumps({k: v for k, v in row.items() if k not in TIMING_FIELDS}, sort_keys=True)


def test_flower_ledger_counts_the_bytes_sent_in_the_run_wire_format(flower, tmp_path):
    """float16 soft labels, int16 hard labels, int8 activations, bfloat16 gradients: the
    Flower server's ledger records exactly the reference's, whose per-kind bytes are the
    serialized tensors', both directions; and the trained weights are the reference's, bit
    for bit (the payload precision is decoded the same on either transport)."""
    wire = (
        "wire.soft_label_dtype=float16 wire.hard_label_dtype=int16 "
        "wire.activation_dtype=int8 wire.gradient_dtype=bfloat16"
    )
    flat = {**TINY_RUN, "rounds": 1, "overrides": f"{TINY_RUN['overrides']} {wire}"}
    run = compose(overrides_from_flower(flat))
    tap = WireTap(run)
    reference = rounds_for(run)(run, tap).run()
    assert_ledger_matches_the_wire(reference.server.ledger, tap.sent)
    assert tap.label_dtypes("up") == {"float16"}  # ADC's soft labels, as configured
    run_dir, _ = flower.run(tmp_path, flat=flat)
    assert_run_equals_the_reference(run, run_dir, reference)


def test_flower_ushape_run_equals_the_in_process_reference(flower, tmp_path):
    """U-shape (two round trips per step, the outputs and their gradients as extra message
    fields) through a real `flwr run`: ledger, heads (with the clients' ends) and the
    server's middle bit-identical to the reference; no client reports a label histogram."""
    flat = {**TINY_RUN, "rounds": 1, "mode": "ushape"}
    run = compose(overrides_from_flower(flat))
    assert run.federation.shape == "u"
    reference = train_reference(run)
    run_dir, stdout = flower.run(tmp_path, flat=flat)
    assert_run_equals_the_reference(run, run_dir, reference)
    assert "samples, labels" not in stdout and "samples" in stdout
