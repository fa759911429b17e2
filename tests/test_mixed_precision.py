"""``precision=bf16``: head and tail forwards under torch.autocast (CPU here), float32
outputs, loss, weights and wire; runs recorded before the key existed keep their identity."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

from fedadc.config import compose
from fedadc.federated.reference import train_reference
from fedadc.federated.results import RunDirectory, config_dict, identity, run_name
from fedadc.model import split_vit
from fedadc.wire import Payload
from tests.test_federated import make_run


def test_bf16_computes_in_bfloat16_and_returns_float32():
    torch.manual_seed(0)
    head, tail, _ = split_vit(
        "vit_tiny_patch16_224", 2, img_size=8, patch_size=2, embed_dim=32, depth=4, num_heads=2,
        num_classes=10,
    )  # fmt: skip
    head.precision = tail.precision = "bf16"
    seen: list[torch.dtype] = []
    for part in (head.vit.blocks[0].mlp.fc1, tail.vit.blocks[0].mlp.fc1):
        part.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    out = head(torch.randn(4, 3, 8, 8))
    assert out.tokens.dtype == out.cls_attention.dtype == torch.float32
    logits = tail(out.tokens.detach().requires_grad_())
    assert logits.dtype == torch.float32 and seen == [torch.bfloat16, torch.bfloat16]
    torch.nn.functional.cross_entropy(logits, torch.arange(4)).backward()
    assert all(p.grad.dtype == torch.float32 for p in tail.parameters() if p.grad is not None)


def test_bf16_training_runs_stays_finite_and_sends_the_same_bytes():
    fp32 = dataclasses.replace(make_run(num_clients=2, rounds=1, local_steps=3), threads=1)
    bf16 = dataclasses.replace(fp32, precision="bf16")
    ref, mixed = train_reference(fp32), train_reference(bf16)
    assert all(math.isfinite(x) for x in mixed.server.losses) and len(mixed.server.losses) == 6
    assert math.isfinite(mixed.history[-1]["test_loss"])
    assert mixed.server.losses != ref.server.losses  # autocast really ran
    # the wire stays as it is: float32 activations and gradients, the same byte counts
    assert mixed.server.ledger.records == ref.server.ledger.records
    head = Payload.from_bytes(mixed.server.global_head).tensors
    assert {t.dtype for t in head.values()} == {torch.float32}


def test_precision_is_checked_and_older_runs_keep_their_identity(tmp_path):
    with pytest.raises(ValueError, match=r"precision must be one of \['fp32', 'bf16'\]"):
        compose(["precision=fp16"])
    run = compose([f"results_dir={tmp_path}"])
    older = {k: v for k, v in config_dict(run).items() if k != "precision"}  # before the key
    assert identity(older) == identity(run)  # same name, so a sweep finds its old runs
    assert identity(config_dict(dataclasses.replace(run, precision="bf16"))) != identity(run)
    directory = RunDirectory(tmp_path / run_name(run))
    directory.path.mkdir()
    (directory.path / "config.json").write_text(json.dumps(older))
    directory.check_same_config(run)  # resumable: the missing key reads as fp32
    with pytest.raises(ValueError, match="precision"):
        directory.check_same_config(dataclasses.replace(run, precision="bf16"))
