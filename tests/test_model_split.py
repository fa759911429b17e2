"""The split model equals the unsplit timm model; the CLS attention row is the real one."""

import copy

import pytest
import timm
import torch

from fedadc.model.split import split_vit
from tests.conftest import TINY_VIT, make_tiny_split


def _unsplit(seed: int = 0):
    torch.manual_seed(seed)
    return timm.create_model("vit_tiny_patch16_224", **TINY_VIT)


def test_head_then_tail_equals_unsplit_model_forward_and_gradients():
    model = _unsplit()
    head, tail, spec = split_vit(copy.deepcopy(model), 2)
    x = torch.randn(6, 1, 8, 8)
    y = torch.randint(0, 5, (6,))
    # unsplit
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    # split, with an explicit cut of the graph as over a wire
    tokens = head(x).tokens
    received = tokens.detach().requires_grad_(True)
    split_loss = torch.nn.functional.cross_entropy(tail(received), y)
    split_loss.backward()
    tokens.backward(received.grad)
    torch.testing.assert_close(split_loss, loss)
    grads = dict(model.named_parameters())
    for name, p in [*head.vit.named_parameters(), *tail.vit.named_parameters()]:
        if name.startswith("blocks."):
            continue  # block indices are renumbered on each side; checked below
        torch.testing.assert_close(p.grad, grads[name].grad, msg=name)
    split_blocks = [*head.vit.blocks, *tail.vit.blocks]
    for i, (a, b) in enumerate(zip(split_blocks, model.blocks, strict=True)):
        for (na, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters(), strict=True):
            torch.testing.assert_close(pa.grad, pb.grad, msg=f"block {i} {na}")
    assert spec.num_tokens == 17 and spec.dim == 24 and spec.num_classes == 5


def test_split_copies_parameters_without_sharing_or_modifying_the_model():
    model = _unsplit()
    n_before = sum(p.numel() for p in model.parameters())
    head, tail, _ = split_vit(model, 2)
    assert sum(p.numel() for p in model.parameters()) == n_before
    assert len(model.blocks) == 4
    n_split = sum(p.numel() for p in head.parameters()) + sum(p.numel() for p in tail.parameters())
    assert n_split == n_before
    ids = {id(p) for p in head.parameters()}
    assert not ids & {id(p) for p in tail.parameters()}


def test_cls_attention_matches_explicit_computation():
    head, _, _ = make_tiny_split(split_at=3)
    x = torch.randn(4, 1, 8, 8)
    out = head(x)
    # independent computation from the block's own weights
    vit = head.vit
    with torch.no_grad():
        h = vit.norm_pre(vit.patch_drop(vit._pos_embed(vit.patch_embed(x))))
        for blk in vit.blocks[:-1]:
            h = blk(h)
        attn = vit.blocks[-1].attn
        z = vit.blocks[-1].norm1(h)
        b, n, c = z.shape
        qkv = (
            attn.qkv(z).reshape(b, n, 3, attn.num_heads, c // attn.num_heads).permute(2, 0, 3, 1, 4)
        )
        q, k = qkv[0], qkv[1]
        probs = ((q * (c // attn.num_heads) ** -0.5) @ k.transpose(-2, -1)).softmax(-1)
        expected = probs[:, :, 0, :].mean(1)
    torch.testing.assert_close(out.cls_attention, expected)
    assert out.cls_attention.shape == (4, 17)
    assert not out.cls_attention.requires_grad
    torch.testing.assert_close(out.cls_attention.sum(1), torch.ones(4))


def test_only_the_last_client_block_leaves_fused_attention():
    head, tail, _ = make_tiny_split(split_at=3)
    flags = [blk.attn.fused_attn for blk in head.vit.blocks]
    assert flags[-1] is False
    fresh = timm.create_model("vit_tiny_patch16_224", **TINY_VIT)
    assert flags[:-1] == [fresh.blocks[i].attn.fused_attn for i in range(2)]
    assert all(b.attn.fused_attn == fresh.blocks[0].attn.fused_attn for b in tail.vit.blocks)


def test_tail_accepts_any_token_count():
    head, tail, _ = make_tiny_split()
    tokens = head(torch.randn(3, 1, 8, 8)).tokens
    for k in (1, 5, 17):
        assert tail(tokens[:, :k]).shape == (3, 5)


@pytest.mark.parametrize(
    "name, tokens, dim",
    [
        ("deit_tiny_patch16_224", 197, 192),
        ("deit_small_patch16_224", 197, 384),
        ("vit_base_patch16_224", 197, 768),
    ],
)
def test_standard_timm_models_split_at_three(name, tokens, dim):
    head, tail, spec = split_vit(name, 3, num_classes=7, depth=4)  # 4 blocks keep it quick
    assert (spec.num_tokens, spec.dim, spec.num_classes) == (tokens, dim, 7)
    assert len(head.vit.blocks) == 3 and len(tail.vit.blocks) == 1
    with torch.no_grad():
        out = head(torch.randn(1, 3, 224, 224))
    assert out.tokens.shape == (1, tokens, dim) and out.cls_attention.shape == (1, tokens)
    assert tail(out.tokens).shape == (1, 7)


def test_local_checkpoint_is_loaded(tmp_path):
    model = _unsplit(seed=3)
    path = tmp_path / "weights.pth"
    torch.save(model.state_dict(), path)
    head, tail, _ = split_vit(
        "vit_tiny_patch16_224",
        2,
        checkpoint_path=str(path),
        **{k: v for k, v in TINY_VIT.items()},
    )
    torch.testing.assert_close(head.vit.pos_embed, model.pos_embed)
    torch.testing.assert_close(tail.vit.blocks[0].mlp.fc1.weight, model.blocks[2].mlp.fc1.weight)


@pytest.mark.parametrize("split_at", [0, 4, -1])
def test_split_point_out_of_range_is_a_clear_error(split_at):
    with pytest.raises(ValueError, match=r"split_at must be in \[1, 3\]"):
        make_tiny_split(split_at=split_at)


def test_wrong_input_size_is_a_clear_error():
    head, _, _ = make_tiny_split()
    with pytest.raises(ValueError, match="input images must be B x 1 x 8 x 8"):
        head(torch.randn(2, 1, 16, 16))
    with pytest.raises(ValueError, match="input images"):
        head(torch.randn(2, 3, 8, 8))


def test_non_vit_and_unknown_names_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="VisionTransformer"):
        split_vit(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="unknown timm model"):
        split_vit("not_a_model", num_classes=3)
    with pytest.raises(ValueError, match="checkpoint_path"):
        split_vit("deit_tiny_patch16_224", num_classes=3, checkpoint_path=str(tmp_path / "x"))
