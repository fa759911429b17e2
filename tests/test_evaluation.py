"""Every evaluation by both protocols: uncompressed (head + tail) and through the split path
(head -> the compressor's inference round trip -> tail), each against a computation written
here from the compressor's public encode / receive interface."""

import dataclasses
import json
import logging
import math
import re

import pytest
import torch
import torch.nn.functional as F

from fedadc.compression.base import Compressor
from fedadc.config.schema import WireConfig
from fedadc.federated.build import load_data
from fedadc.federated.reference import train_reference
from fedadc.federated.results import RunDirectory
from fedadc.federated.server import FederatedServer
from fedadc.wire import Payload
from fedadc.wire.payload import WireFormat
from tests.test_federated import BUILT_IN, method_run


def split_path_input(
    compressor: Compressor, tokens: torch.Tensor, attention: torch.Tensor, wire: WireFormat
) -> torch.Tensor:
    """The tail's input through the split path, via encode -> bytes -> receive. ADC's plan
    is per sample (a test sample travels alone): every sample its own cluster, keeping CLS
    and the k - 1 patches of its own largest CLS attention."""
    batch = tokens.shape[0]
    labels = torch.zeros(batch, dtype=torch.long)
    if compressor.name == "adc":
        k = compressor.sizes(batch)[1]
        patches = attention[:, 1:].argsort(dim=1, descending=True)[:, : k - 1] + 1
        kept = torch.cat([torch.zeros(batch, 1, dtype=torch.long), patches.sort(dim=1).values], 1)
        plan = {"assignments": torch.arange(batch), "kept_tokens": kept}
    else:
        plan = compressor.make_plan(tokens, attention, labels, None)
    payload = compressor.encode(tokens, labels, plan).payload
    return compressor.receive(Payload.from_bytes(payload.to_bytes(wire))).server_input


def independent(server: FederatedServer) -> dict[str, tuple[float, float]]:
    """(accuracy, mean loss) of the server's global head + tail on the whole test split in
    one batch, uncompressed and through the split path."""
    head, tail, compressor = server.split.head, server.split.tail, server.compressor
    for module in (head, tail, compressor):
        module.eval()
    test = server.data.test
    images, labels = test.batch(torch.arange(len(test)))
    with torch.no_grad():
        tokens, attention = head(images)
        wire = WireFormat.from_config(server.run.wire)
        logits = {
            "uncompressed": tail(tokens),
            "split": tail(split_path_input(compressor, tokens, attention, wire)),
        }
    return {
        name: (
            int((out.argmax(1) == labels).sum()) / len(test),
            float(F.cross_entropy(out, labels)),
        )
        for name, out in logits.items()
    }


def check_against_independent(run) -> None:
    server = FederatedServer(run, load_data(run))
    evaluation = server.evaluate()  # loads the global head into the server's copy
    want = independent(server)
    for name in ("uncompressed", "split"):
        got = getattr(evaluation, name)
        assert got.num_samples == len(server.data.test) == 64
        assert got.accuracy == want[name][0], name
        assert got.loss == pytest.approx(want[name][1], rel=1e-6), name
    lossless = run.method.name == "identity" and run.wire.activation_dtype == "float32"
    if lossless:
        assert evaluation.split == evaluation.uncompressed
    else:  # the protocols differ by more than the tolerance above: the check can fail
        gap = abs(evaluation.split.loss - evaluation.uncompressed.loss)
        assert gap > 1e-6 * evaluation.uncompressed.loss


@pytest.mark.parametrize("method", BUILT_IN)
def test_both_protocols_equal_independent_computations(method):
    check_against_independent(method_run(method))


@pytest.mark.parametrize("method", ["identity", "topk", "adc"])
def test_the_split_path_travels_in_the_runs_wire_format(method):
    run = dataclasses.replace(method_run(method), wire=WireConfig(activation_dtype="int8"))
    check_against_independent(run)


@pytest.mark.parametrize(
    "method, evaluate_compressed, protocol",
    [
        ("identity", None, "uncompressed"),
        ("adc", None, "uncompressed"),  # the paper's protocol
        ("bottlenet", None, "split"),  # its learned codec is part of the model
        ("adc", True, "split"),  # ADC's per-sample inference; merging methods used to refuse
        ("topk", True, "split"),
        ("bottlenet", False, "uncompressed"),
    ],
)
def test_the_headline_is_the_methods_protocol_or_evaluate_compressed(
    method, evaluate_compressed, protocol
):
    run = dataclasses.replace(method_run(method), evaluate_compressed=evaluate_compressed)
    server = FederatedServer(run, load_data(run))
    evaluation = server.evaluate()
    assert server.test_protocol == evaluation.protocol == protocol
    chosen = getattr(evaluation, protocol)
    metrics = evaluation.metrics()
    assert (metrics["test_accuracy"], metrics["test_loss"]) == (chosen.accuracy, chosen.loss)
    for name in ("uncompressed", "split"):
        got = getattr(evaluation, name)
        assert metrics[f"test_accuracy_{name}"] == got.accuracy
        assert metrics[f"test_loss_{name}"] == got.loss


def test_round_line_rows_and_summary_carry_both(tmp_path, caplog):
    run = dataclasses.replace(method_run("adc", rounds=2, eval_every=2), results_dir=str(tmp_path))
    caplog.set_level(logging.INFO, logger="fedadc")
    results = RunDirectory.create(run, "both")
    history = train_reference(run, results=results).history

    skipped, last = history
    assert all(math.isnan(skipped[k]) for k in ("test_accuracy_uncompressed", "test_loss_split"))
    assert last["test_accuracy"] == last["test_accuracy_uncompressed"]  # ADC's headline
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("round   2")]
    pattern = r"test acc (\S+) \(unc (\S+) / split (\S+)\)"
    shown = tuple(float(x) for x in re.search(pattern, lines[-1]).groups())
    keys = ("test_accuracy", "test_accuracy_uncompressed", "test_accuracy_split")
    assert shown == tuple(round(last[k], 4) for k in keys)

    rows = [json.loads(line) for line in (results.path / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["test_accuracy_split"] == last["test_accuracy_split"]
    summary = json.loads((results.path / "summary.json").read_text())
    assert summary["test_protocol"] == "uncompressed"
    assert summary["final_accuracy"] == summary["final_accuracy_uncompressed"]
    for name in ("uncompressed", "split"):
        assert summary[f"final_accuracy_{name}"] == last[f"test_accuracy_{name}"]
        assert summary[f"final_loss_{name}"] == last[f"test_loss_{name}"]
