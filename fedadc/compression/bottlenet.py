"""BottleNet++ (Shao & Zhang, "BottleNet++: An End-to-End Approach for Feature Compression
in Device-Edge Co-Inference Systems", 2020), simplified as in the ADC paper's baseline.

A learned per-token autoencoder: the client's encoder maps each ``d``-dim token to
``d' = max(1, round(ratio * d))`` dims, the server's decoder maps it back. Both are MLPs with
one hidden layer of width ``round((d + d') / 2)``. The codec is part of the model, so
evaluation goes through it (``compress_at_eval``). Weights are initialised from torch's
global RNG: seed it (``torch.manual_seed``) before construction for reproducibility.

The configured ``ratio`` is the nominal compression ratio the paper records; the realised
activation ratio is ``d' / d`` (see :attr:`BottleNetPP.realised_ratio`).
"""

from __future__ import annotations

import torch
from torch import nn

from fedadc.compression.base import Compressor, Plan
from fedadc.compression.registry import register_compressor
from fedadc.compression.topk import check_ratio
from fedadc.model.spec import TokenSpec
from fedadc.wire.payload import Payload, PayloadError


@register_compressor("bottlenet")
class BottleNetPP(Compressor):
    """Per-token MLP autoencoder across the split: ``B x n x d'`` float32 on the wire."""

    compress_at_eval = True
    ratio_params = {"ratio": "r"}  # noqa: RUF012

    def __init__(self, spec: TokenSpec, ratio: float, decoder_relu: bool = False) -> None:
        super().__init__(spec)
        self.ratio = check_ratio(ratio)
        if not isinstance(decoder_relu, bool):
            raise ValueError(f"decoder_relu must be a bool, got {decoder_relu!r}")
        self.decoder_relu = decoder_relu
        d = spec.dim
        self.code_dim = max(1, round(self.ratio * d))
        self.hidden_dim = round((d + self.code_dim) / 2)
        self.encoder = nn.Sequential(
            nn.Linear(d, self.hidden_dim), nn.ReLU(), nn.Linear(self.hidden_dim, self.code_dim)
        )
        layers: list[nn.Module] = [
            nn.Linear(self.code_dim, self.hidden_dim),
            nn.ReLU(),
            nn.Linear(self.hidden_dim, d),
        ]
        if decoder_relu:
            layers.append(nn.ReLU())
        self.decoder = nn.Sequential(*layers)

    @property
    def realised_ratio(self) -> float:
        """``d' / d``: the activation ratio actually sent."""
        return self.code_dim / self.spec.dim

    def nominal_xi(self, batch_size: int) -> float:
        """The configured ``ratio`` (the realised one is :attr:`realised_ratio`)."""
        return self.ratio

    def encoder_forward(self, tokens: torch.Tensor, plan: Plan) -> torch.Tensor:
        return self.encoder(tokens)

    def received_leaf(self, payload: Payload) -> torch.Tensor:
        code = payload["activations"]
        expected = (self.spec.num_tokens, self.code_dim)
        if code.ndim != 3 or tuple(code.shape[1:]) != expected:
            raise PayloadError(
                f"bottlenet payload activations must be B x {expected[0]} x {expected[1]}, "
                f"got {tuple(code.shape)}"
            )
        return code.float()

    def decoder_forward(self, leaf: torch.Tensor, payload: Payload) -> torch.Tensor:
        return self.decoder(leaf)
