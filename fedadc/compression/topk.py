"""Top-k sparsification of the split activations, and its randomised variant.

``topk`` keeps, per sample, the ``k`` entries of largest magnitude of the flattened
``n x d`` activation (CLS included) and sends their values plus their positions; the server
scatters them into zeros. ``randtopk`` is RandTop-k (Zheng et al., "Reducing Communication
for Split Learning by Randomized Top-k Sparsification", IJCAI 2023, arXiv 2305.18469): the
``k`` positions are sampled without replacement from a distribution that puts mass
``1 - random_portion`` uniformly on the top-k set and ``random_portion`` uniformly on the rest,
so that non-top entries also get trained.

Only the ``B x k`` values travel back as gradient: the client already holds the indices.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from fedadc.compression.base import Compressor, Plan
from fedadc.compression.registry import register_compressor
from fedadc.model.spec import TokenSpec
from fedadc.wire.payload import Kind, Payload, PayloadError


def index_dtype(num_features: int) -> np.dtype:
    """Smallest wire dtype holding indices ``0 .. num_features - 1``."""
    if num_features - 1 <= np.iinfo(np.uint8).max:
        return np.dtype(np.uint8)
    if num_features - 1 <= np.iinfo(np.uint16).max:
        return np.dtype(np.uint16)
    return np.dtype(np.int32)


def check_ratio(ratio: float, name: str = "ratio") -> float:
    """Validate a fraction in ``(0, 1]``."""
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)):
        raise ValueError(f"{name} must be a number in (0, 1], got {ratio!r}")
    if not 0.0 < float(ratio) <= 1.0:
        raise ValueError(f"{name} must be in (0, 1], got {ratio}")
    return float(ratio)


def default_generator(generator: torch.Generator | None) -> torch.Generator:
    """The caller's generator, or a fresh CPU one seeded with 0."""
    return generator if generator is not None else torch.Generator().manual_seed(0)


@register_compressor("topk")
class TopK(Compressor):
    """Keeps the ``k = max(1, round(ratio * n * d))`` largest-magnitude entries per sample."""

    ratio_params = {"ratio": "r"}  # noqa: RUF012

    def __init__(self, spec: TokenSpec, ratio: float) -> None:
        super().__init__(spec)
        self.ratio = check_ratio(ratio)
        self.k = max(1, round(self.ratio * spec.sample_features))

    def nominal_xi(self, batch_size: int) -> float:
        """The paper's formula: index bits ``ceil(log2(B n d))`` charged on the forward only."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        index_bits = math.ceil(math.log2(batch_size * self.spec.sample_features))
        return 0.5 * (self.ratio * (1 + index_bits / 32) + self.ratio)

    # ---------------------------------------------------------------- client side
    def make_plan(
        self,
        tokens: torch.Tensor,
        cls_attention: torch.Tensor | None,
        labels: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> Plan:
        """``indices``: ``B x k`` int64, sorted ascending per sample."""
        with torch.no_grad():
            flat = tokens.detach().flatten(1)
            if self.k == flat.shape[1]:
                idx = torch.arange(flat.shape[1], device=flat.device).expand(flat.shape[0], -1)
            else:
                idx = self.select(flat, default_generator(generator))
            return {"indices": idx.sort(dim=1).values.contiguous()}

    def select(self, flat: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Indices (``B x k``, any order) of the kept entries of ``flat`` (``B x n d``)."""
        return flat.abs().topk(self.k, dim=1).indices

    def encoder_forward(self, tokens: torch.Tensor, plan: Plan) -> torch.Tensor:
        idx = self._plan_indices(tokens, plan)
        return tokens.flatten(1).gather(1, idx)

    def add_extras(self, payload: Payload, tokens: torch.Tensor, plan: Plan) -> None:
        idx = plan["indices"].detach().cpu().numpy()
        wire = idx.astype(index_dtype(self.spec.sample_features))
        payload.add("indices", torch.from_numpy(wire), Kind.INDICES)

    def _plan_indices(self, tokens: torch.Tensor, plan: Plan) -> torch.Tensor:
        if "indices" not in plan:
            raise ValueError(f"plan for {self.name!r} needs 'indices'; build it with make_plan")
        idx = plan["indices"]
        expected = (tokens.shape[0], self.k)
        if tuple(idx.shape) != expected or idx.dtype != torch.int64:
            raise ValueError(
                f"plan['indices'] must be int64 of shape {expected}, "
                f"got {idx.dtype} {tuple(idx.shape)}"
            )
        return idx.to(tokens.device)

    # ---------------------------------------------------------------- server side
    def expected_tensors(self) -> dict[str, str]:
        return {"activations": "float", "indices": "int", "labels": "label"}

    def validate_payload(self, payload: Payload, max_samples: int, *, labeled: bool = True) -> None:
        super().validate_payload(payload, max_samples, labeled=labeled)
        self._received_indices(payload, payload["activations"].shape[0])

    def received_leaf(self, payload: Payload) -> torch.Tensor:
        values = payload["activations"]
        if values.ndim != 2 or values.shape[1] != self.k:
            raise PayloadError(
                f"{self.name} payload activations must be B x {self.k}, got {tuple(values.shape)}"
            )
        return values.float()

    def decoder_forward(self, leaf: torch.Tensor, payload: Payload) -> torch.Tensor:
        idx = self._received_indices(payload, leaf.shape[0]).to(leaf.device)
        batch, features = leaf.shape[0], self.spec.sample_features
        dense = torch.zeros(batch, features, dtype=leaf.dtype, device=leaf.device)
        return dense.scatter(1, idx, leaf).view(batch, self.spec.num_tokens, self.spec.dim)

    def _received_indices(self, payload: Payload, batch: int) -> torch.Tensor:
        wire = payload["indices"]
        if tuple(wire.shape) != (batch, self.k):
            raise PayloadError(
                f"{self.name} payload indices must be {batch} x {self.k}, got {tuple(wire.shape)}"
            )
        idx = torch.from_numpy(wire.numpy().astype(np.int64))
        if idx.numel():
            if int(idx.min()) < 0 or int(idx.max()) >= self.spec.sample_features:
                raise PayloadError(
                    f"{self.name} payload indices must lie in [0, {self.spec.sample_features})"
                )
            if self.k > 1 and bool((idx.sort(dim=1).values.diff(dim=1) == 0).any()):
                raise PayloadError(f"{self.name} payload has repeated indices within a sample")
        return idx


@register_compressor("randtopk")
class RandTopK(TopK):
    """RandTop-k: ``k`` indices sampled without replacement, biased towards the top-k set.

    Each top-k entry has probability ``(1 - random_portion) / k``, each other entry
    ``random_portion / (n d - k)``; sampling uses the Gumbel-top-k trick (top-k of
    ``log p + Gumbel noise``), which equals sequential sampling without replacement.
    Note that without replacement the expected share of top-k entries among the samples
    is below ``1 - random_portion`` once ``k > 1`` (the top-k set depletes first).
    """

    def __init__(self, spec: TokenSpec, ratio: float, random_portion: float = 0.1) -> None:
        super().__init__(spec, ratio)
        if isinstance(random_portion, bool) or not isinstance(random_portion, (int, float)):
            raise ValueError(f"random_portion must be a number in [0, 1), got {random_portion!r}")
        if not 0.0 <= float(random_portion) < 1.0:
            raise ValueError(f"random_portion must be in [0, 1), got {random_portion}")
        self.random_portion = float(random_portion)

    def select(self, flat: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        batch, features = flat.shape
        top = flat.abs().topk(self.k, dim=1).indices
        log_rest = -math.inf
        if self.random_portion > 0:
            log_rest = math.log(self.random_portion / (features - self.k))
        log_p = torch.full((batch, features), log_rest, dtype=torch.float64)
        log_p.scatter_(1, top.cpu(), math.log((1.0 - self.random_portion) / self.k))
        uniform = torch.rand(
            (batch, features), generator=generator, dtype=torch.float64, device=generator.device
        ).cpu()
        tiny = torch.finfo(torch.float64).tiny
        gumbel = -torch.log(-torch.log(uniform.clamp(min=tiny)))
        return (log_p + gumbel).topk(self.k, dim=1).indices.to(flat.device)
