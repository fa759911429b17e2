"""The arithmetic of ADC, kept apart from the module (ToMe-style): sizes, merge, select.

Everything here is plain tensor code: ``merge_mean`` and ``gather_tokens`` are ordinary
autograd ops, so the gradient of a merged, token-selected batch flows back to every member
of a cluster (scaled by 1/|cluster|) on its kept rows, exactly as in the paper.
"""

from __future__ import annotations

import math

import torch

SPLIT_RULES = ("sqrt", "authors_code")


def ratios_from_xi(xi: float, rule: str) -> tuple[float, float]:
    """(T/B, k/n) whose product is ``xi``.

    ``sqrt``: the paper's stated rule, sqrt(xi) each. ``authors_code``: the split used by
    every published run of the authors' code, xi^(1/5) for the batch and xi^(4/5) for tokens.
    """
    if rule == "sqrt":
        return math.sqrt(xi), math.sqrt(xi)
    if rule == "authors_code":
        return xi ** (1 / 5), xi ** (4 / 5)
    raise ValueError(f"split_rule must be one of {SPLIT_RULES}, got {rule!r}")


def _floor(x: float) -> int:
    # int() as in the paper, robust to 0.1 * 130 = 12.999999... style float error
    return math.floor(x + 1e-9)


def num_clusters(batch_ratio: float, batch_size: int) -> int:
    """T = max(2, floor(batch_ratio * B)), never more than B."""
    return min(batch_size, max(2, _floor(batch_ratio * batch_size)))


def num_kept_tokens(token_ratio: float, num_tokens: int, num_prefix_tokens: int) -> int:
    """k = max(1, floor(token_ratio * n)), prefix tokens (CLS) included and always kept."""
    return min(num_tokens, max(1, num_prefix_tokens, _floor(token_ratio * num_tokens)))


def cluster_sizes(assignments: torch.Tensor, num_groups: int) -> torch.Tensor:
    return torch.bincount(assignments, minlength=num_groups)


def merge_mean(x: torch.Tensor, assignments: torch.Tensor, num_groups: int) -> torch.Tensor:
    """Unweighted mean of the rows of ``x`` (B x ...) per group -> T x ...

    Every group must be non-empty (our K-means guarantees it); an empty group is an error,
    never a silent NaN.
    """
    sizes = cluster_sizes(assignments, num_groups)
    if bool((sizes == 0).any()):
        raise ValueError("every cluster needs at least one member; got an empty cluster")
    summed = x.new_zeros((num_groups, *x.shape[1:])).index_add(0, assignments, x)
    return summed / sizes.view(-1, *([1] * (x.ndim - 1))).to(x.dtype)


def soft_labels(
    labels: torch.Tensor, assignments: torch.Tensor, num_groups: int, num_classes: int
) -> torch.Tensor:
    """Mean of the members' one-hot labels, T x C, rows summing to 1."""
    one_hot = torch.nn.functional.one_hot(labels, num_classes).to(torch.float32)
    return merge_mean(one_hot, assignments, num_groups)


def top_tokens(scores: torch.Tensor, k: int, num_prefix_tokens: int) -> torch.Tensor:
    """Indices of the kept tokens per row of ``scores`` (T x n) -> T x k.

    Prefix tokens (CLS, registers) come first and are always kept; the ``k - prefix``
    patch tokens with the largest score follow in ascending index order (order is free for
    a ViT once positions are embedded; sorting makes the payload deterministic).
    """
    rows, _ = scores.shape
    prefix = torch.arange(num_prefix_tokens, device=scores.device).expand(rows, -1)
    num_patches = k - num_prefix_tokens
    if num_patches <= 0:
        return prefix[:, :k]
    patch_idx = scores[:, num_prefix_tokens:].topk(num_patches, dim=1).indices
    patch_idx = patch_idx.sort(dim=1).values + num_prefix_tokens
    return torch.cat([prefix, patch_idx], dim=1)


def gather_tokens(x: torch.Tensor, token_idx: torch.Tensor) -> torch.Tensor:
    """Rows ``token_idx`` (T x k) of each sample of ``x`` (T x n x d) -> T x k x d."""
    return x.gather(1, token_idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def with_class_separation(
    feature: torch.Tensor, labels: torch.Tensor, num_classes: int
) -> torch.Tensor:
    """``feature`` (B x f) with a one-hot label block so far apart that K-means never puts
    two classes in one cluster while it has a cluster per class present (then every merged
    label is hard); with fewer clusters than classes whole classes merge.

    The block's scale exceeds the largest distance between two feature rows, so any
    cross-class pair is farther apart than any same-class pair.
    """
    spread = (feature.max(dim=0).values - feature.min(dim=0).values).norm()
    scale = 2.0 * float(spread) + 1.0
    onehot = torch.nn.functional.one_hot(labels, num_classes).to(feature.dtype)
    return torch.cat([feature, scale * onehot], dim=1)
