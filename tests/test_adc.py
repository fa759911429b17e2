"""ADC against the paper's definition (notes section 2) and an independent loop."""

import math

import pytest
import torch

from fedadc.compression import create_compressor
from fedadc.compression.adc_math import num_clusters, num_kept_tokens, ratios_from_xi
from fedadc.model.spec import TokenSpec
from fedadc.wire import Ledger, Payload

DEIT = TokenSpec(num_tokens=197, dim=192, num_classes=100)
SMALL = TokenSpec(num_tokens=17, dim=8, num_classes=4)


# The paper notes' table (section 2.9): realised (T, k) for B = 128, n = 197.
SQRT = {
    0.01: (12, 19),
    0.05: (28, 44),
    0.1: (40, 62),
    0.2: (57, 88),
    0.3: (70, 107),
    0.4: (80, 124),
    0.5: (90, 139),
}
AUTHORS = {
    0.01: (50, 4),
    0.05: (70, 17),
    0.1: (80, 31),
    0.2: (92, 54),
    0.3: (100, 75),
    0.4: (106, 94),
    0.5: (111, 113),
}


@pytest.mark.parametrize("rule, table", [("sqrt", SQRT), ("authors_code", AUTHORS)])
def test_cluster_and_token_counts_match_the_paper_table(rule, table):
    for xi, (t, k) in table.items():
        bc, tc = ratios_from_xi(xi, rule)
        assert (num_clusters(bc, 128), num_kept_tokens(tc, 197, 1)) == (t, k), xi


def _batch(b=16, spec=SMALL, seed=0):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randn(b, spec.num_tokens, spec.dim, generator=g)
    attn = torch.rand(b, spec.num_tokens, generator=g).softmax(1)
    labels = torch.randint(0, spec.num_classes, (b,), generator=g)
    return tokens, attn, labels


def test_shapes_soft_labels_cls_kept_and_realised_xi():
    adc = create_compressor("adc", DEIT, xi=0.1)
    tokens, attn, labels = _batch(128, DEIT)
    plan = adc.make_plan(tokens, attn, labels, torch.Generator().manual_seed(0))
    enc = adc.encode(tokens, labels, plan)
    t, k = 40, 62
    assert enc.sent.shape == (t, k, 192)
    soft = enc.payload["labels"]
    assert soft.shape == (t, 100)
    torch.testing.assert_close(soft.sum(1), torch.ones(t))
    assert (plan["kept_tokens"][:, 0] == 0).all()  # CLS first, always
    assert torch.bincount(plan["assignments"], minlength=t).min() >= 1
    ledger = Ledger()
    ledger.transmit(enc.payload, direction="up", baseline_bytes=DEIT.uncompressed_bytes(128))
    rec = adc.receive(Payload.from_bytes(ledger.transmit(enc.payload, direction="up")))
    ledger.records.pop()
    ledger.transmit(adc.encode_gradient(torch.ones_like(rec.leaf), enc.payload), direction="down")
    assert math.isclose(ledger.realised_xi(), (t / 128) * (k / 197), rel_tol=1e-12)


def test_merge_and_selection_equal_an_independent_per_cluster_loop():
    """Forward values and client gradients against the paper's pseudo-code, written as a loop."""
    adc = create_compressor("adc", SMALL, xi=0.3)
    tokens, attn, labels = _batch(20)
    plan = adc.make_plan(tokens, attn, labels, torch.Generator().manual_seed(1))
    x1 = tokens.clone().requires_grad_(True)
    enc = adc.encode(x1, labels, plan)
    x2 = tokens.clone().requires_grad_(True)
    ids = plan["assignments"]
    t, k = plan["kept_tokens"].shape
    rows, soft = [], []
    for c in range(t):
        members = (ids == c).nonzero().flatten()
        centroid = attn[members].mean(0)
        top = torch.topk(centroid[1:], k - 1).indices + 1
        keep = torch.cat([torch.zeros(1, dtype=torch.long), top.sort().values])
        rows.append(x2[members].mean(0)[keep])
        soft.append(torch.nn.functional.one_hot(labels[members], 4).float().mean(0))
    expected = torch.stack(rows)
    torch.testing.assert_close(enc.sent, expected)
    torch.testing.assert_close(enc.payload["labels"], torch.stack(soft))
    weights = torch.randn_like(expected)
    (enc.sent * weights).sum().backward()
    (expected * weights).sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad)


def test_plan_replay_gives_the_same_payload_bit_for_bit():
    adc = create_compressor("adc", SMALL, xi=0.2)
    tokens, attn, labels = _batch(32)
    plan = adc.make_plan(tokens, attn, labels, torch.Generator().manual_seed(5))
    again = adc.make_plan(tokens, attn, labels, torch.Generator().manual_seed(5))
    assert all(torch.equal(plan[key], again[key]) for key in plan)
    one = adc.encode(tokens, labels, plan).payload.to_bytes()
    two = adc.encode(tokens.clone(), labels, plan).payload.to_bytes()
    assert one == two


@pytest.mark.parametrize("feature", ["cls", "mean"])
def test_other_clustering_features_still_select_tokens_by_attention(feature):
    adc = create_compressor("adc", SMALL, xi=0.25, feature=feature)
    tokens, attn, labels = _batch(16)
    plan = adc.make_plan(tokens, attn, labels, torch.Generator().manual_seed(0))
    ids, kept = plan["assignments"], plan["kept_tokens"]
    for c in range(kept.shape[0]):
        group = attn[ids == c].mean(0)
        top = set((torch.topk(group[1:], kept.shape[1] - 1).indices + 1).tolist())
        assert set(kept[c, 1:].tolist()) == top


def test_merge_only_and_tokens_only():
    tokens, attn, labels = _batch(16)
    merge = create_compressor("adc", SMALL, xi=0.25, mode="merge_only")
    enc = merge.encode(tokens, labels, merge.make_plan(tokens, attn, labels))
    assert enc.sent.shape == (4, 17, 8) and enc.payload["labels"].dtype == torch.float32
    only = create_compressor("adc", SMALL, xi=0.25, mode="tokens_only")
    enc = only.encode(tokens, labels, only.make_plan(tokens, attn, labels))
    assert enc.sent.shape == (16, 4, 8)
    assert torch.equal(enc.payload["labels"], labels)  # hard labels, no merging
    assert only.eval_forward(tokens, attn).shape == (16, 4, 8)  # per-sample, k tokens


def test_explicit_ratios_and_authors_split():
    adc = create_compressor("adc", DEIT, batch_ratio=0.5, token_ratio=0.2)
    assert adc.sizes(128) == (64, 39) and math.isclose(adc.nominal_xi(128), 0.1)
    adc = create_compressor("adc", DEIT, xi=0.01, split_rule="authors_code")
    assert adc.sizes(128) == (50, 4)


def test_duplicate_attention_rows_never_give_nan_or_empty_clusters():
    adc = create_compressor("adc", SMALL, xi=0.5)
    tokens, attn, labels = _batch(16)
    attn = attn[:1].expand(16, -1).contiguous()  # every sample identical
    plan = adc.make_plan(tokens, attn, labels, torch.Generator().manual_seed(0))
    enc = adc.encode(tokens, labels, plan)
    assert torch.isfinite(enc.sent).all() and torch.isfinite(enc.payload["labels"]).all()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"xi": 0.0}, "xi must be in"),
        ({"xi": 1.5}, "xi must be in"),
        ({}, "needs xi"),
        ({"xi": 0.1, "batch_ratio": 0.5}, "either xi"),
        ({"batch_ratio": 0.0, "token_ratio": 0.5}, "batch_ratio"),
        ({"xi": 0.1, "mode": "x"}, "mode"),
        ({"xi": 0.1, "feature": "x"}, "feature"),
        ({"xi": 0.1, "split_rule": "cube"}, "split_rule"),
    ],
)
def test_invalid_parameters_are_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        create_compressor("adc", SMALL, **kwargs)


def test_batch_of_one_and_bad_labels_are_clear_errors():
    adc = create_compressor("adc", SMALL, xi=0.5)
    tokens, attn, labels = _batch(1)
    with pytest.raises(ValueError, match="batch of at least 2"):
        adc.make_plan(tokens, attn, labels)
    tokens, attn, labels = _batch(8)
    plan = adc.make_plan(tokens, attn, labels)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\]"):
        adc.encode(tokens, labels + 10, plan)


@pytest.mark.parametrize(
    "params, k",
    [
        ({"xi": 0.25}, 8),  # double: k = floor(sqrt(0.25) 17)
        ({"xi": 0.25, "mode": "tokens_only"}, 4),
        ({"xi": 0.25, "mode": "merge_only"}, 17),  # merge_only keeps every token
        ({"xi": 0.25, "weighting": "size", "cluster": "within_class"}, 8),
    ],
)
def test_eval_forward_keeps_each_samples_own_top_k_tokens_and_merges_nothing(params, k):
    adc = create_compressor("adc", SMALL, **params)
    tokens, attn, _ = _batch(16)
    assert adc.sizes(16)[1] == k
    out = adc.eval_forward(tokens, attn)
    assert out.shape == (16, k, SMALL.dim)  # T = B: one row per test sample
    for b in range(16):
        # CLS first, then the k - 1 patches this sample's own CLS attention ranks highest
        ranked = sorted(range(1, SMALL.num_tokens), key=lambda i: -float(attn[b, i]))
        want = [0, *sorted(ranked[: k - 1])]
        assert torch.equal(out[b], tokens[b, want])
    # a sample travelling alone gets the same tokens as in a batch (no batch of 2 needed)
    assert torch.equal(adc.eval_forward(tokens[3:4], attn[3:4]), out[3:4])


def test_eval_forward_needs_the_cls_attention():
    adc = create_compressor("adc", SMALL, xi=0.25)
    tokens, attn, _ = _batch(4)
    with pytest.raises(ValueError, match="CLS attention"):
        adc.eval_forward(tokens)
    with pytest.raises(ValueError, match="CLS attention"):
        adc.eval_forward(tokens, attn[:, :5])
