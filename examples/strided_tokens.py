"""A worked example of a new compression method: keep CLS and every s-th patch token.

Not a good method (it ignores what the tokens contain), but a complete one: registered by
name, usable from configs, and checked by the same invariants as the built-in methods
(``tests/test_examples.py``). See docs/adding-a-method.md.
"""

from __future__ import annotations

import torch

from fedadc.compression import Compressor, register_compressor
from fedadc.model.spec import TokenSpec


@register_compressor("strided_tokens")
class StridedTokens(Compressor):
    """Sends B x k x d: the prefix tokens and patch tokens 0, s, 2s, ... (s = ``stride``)."""

    def __init__(self, spec: TokenSpec, stride: int = 4) -> None:
        super().__init__(spec)
        if stride < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        self.stride = stride
        prefix = torch.arange(spec.num_prefix_tokens)
        patches = torch.arange(spec.num_prefix_tokens, spec.num_tokens, stride)
        # a buffer, so .to(device) moves it with the module
        self.register_buffer("kept", torch.cat([prefix, patches]), persistent=False)

    def nominal_xi(self, batch_size: int) -> float:
        return len(self.kept) / self.spec.num_tokens

    def encoder_forward(self, tokens: torch.Tensor, plan: dict) -> torch.Tensor:
        # differentiable: the gradient of the kept rows flows back to the head
        return tokens[:, self.kept]
