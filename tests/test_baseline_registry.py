"""Every baseline compressor from the registry: invalid parameters are refused naming the
parameter, and a valid one builds under its name and evaluates shape-preserving."""

from __future__ import annotations

import pytest
import torch

from fedadc.compression import create_compressor
from tests.baseline_support import SPEC, make_batch


@pytest.mark.parametrize(
    ("name", "params", "word"),
    [
        ("topk", {"ratio": 0.0}, "ratio"),
        ("topk", {"ratio": 1.5}, "ratio"),
        ("randtopk", {"ratio": 0.0}, "ratio"),
        ("randtopk", {"ratio": 0.5, "random_portion": 1.0}, "random_portion"),
        ("randtopk", {"ratio": 0.5, "random_portion": -0.1}, "random_portion"),
        ("bottlenet", {"ratio": 0.0}, "ratio"),
        ("bottlenet", {"ratio": 1.5}, "ratio"),
        ("quantization", {"bits": 0}, "bits"),
        ("quantization", {"bits": 17}, "bits"),
        ("quantization", {"bits": 4.0}, "bits"),
        ("c3sl", {"group_size": 0}, "group_size"),
        ("c3sl", {"key_seed": -1}, "key_seed"),
    ],
)
def test_invalid_params(name: str, params: dict, word: str) -> None:
    with pytest.raises(ValueError, match=word):
        create_compressor(name, SPEC, **params)


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("topk", {"ratio": 0.2}),
        ("randtopk", {"ratio": 0.2}),
        ("c3sl", {}),
        ("bottlenet", {"ratio": 0.25}),
        ("quantization", {"bits": 4}),
    ],
)
def test_registry_and_eval_forward(name: str, params: dict) -> None:
    comp = create_compressor(name, SPEC, **params)
    assert comp.name == name
    tokens, _ = make_batch(5)
    with torch.no_grad():
        assert comp.eval_forward(tokens).shape == tokens.shape
