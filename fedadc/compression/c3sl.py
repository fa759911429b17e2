"""C3-SL: batch-wise compression by circular convolution (Hsieh et al., "C3-SL: Circular
Convolution-Based Batch-Wise Compression for Communication-Efficient Split Learning", 2022).

Groups of ``R`` samples are superposed into one vector: each flattened sample ``x_r``
(length ``F = n d``) is circularly convolved with its own fixed key ``k_r`` and the results
are summed. The server recovers slot ``r`` approximately by circular correlation with
``k_r``. Keys are ``R`` Gaussian vectors, each L2-normalised, drawn from ``key_seed`` when
the compressor is built, so both sides hold the same keys without sending them. Batches are
padded with zero samples to a multiple of ``R`` and the decoded batch is cropped back.
"""

from __future__ import annotations

import math

import torch

from fedadc.compression.base import Compressor, Plan
from fedadc.compression.registry import register_compressor
from fedadc.model.spec import TokenSpec
from fedadc.wire.payload import Payload, PayloadError


def make_keys(num_keys: int, length: int, seed: int) -> torch.Tensor:
    """``num_keys x length`` float32 Gaussian keys with unit L2 norm per row."""
    generator = torch.Generator().manual_seed(seed)
    keys = torch.randn(num_keys, length, generator=generator, dtype=torch.float32)
    return keys / keys.norm(dim=1, keepdim=True)


@register_compressor("c3sl")
class C3SL(Compressor):
    """Sends ``ceil(B / R) x n d`` float32 superpositions instead of ``B x n d``."""

    keys: torch.Tensor
    ratio_params = {"group_size": "R"}  # noqa: RUF012

    def __init__(self, spec: TokenSpec, group_size: int = 4, key_seed: int = 0) -> None:
        super().__init__(spec)
        if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
            raise ValueError(f"group_size must be an integer >= 1, got {group_size!r}")
        if isinstance(key_seed, bool) or not isinstance(key_seed, int) or key_seed < 0:
            raise ValueError(f"key_seed must be an integer >= 0, got {key_seed!r}")
        self.group_size = group_size
        self.key_seed = key_seed
        self.register_buffer("keys", make_keys(group_size, spec.sample_features, key_seed))

    def nominal_xi(self, batch_size: int) -> float:
        """``1 / R`` (the zero padding of a last partial group is not charged)."""
        return 1.0 / self.group_size

    def num_groups(self, batch_size: int) -> int:
        return math.ceil(batch_size / self.group_size)

    # ---------------------------------------------------------------- client side
    def encoder_forward(self, tokens: torch.Tensor, plan: Plan) -> torch.Tensor:
        batch, features = tokens.shape[0], self.spec.sample_features
        groups = self.num_groups(batch)
        flat = tokens.flatten(1)
        pad = groups * self.group_size - batch
        if pad:
            flat = torch.cat([flat, flat.new_zeros(pad, features)], dim=0)
        grouped = flat.view(groups, self.group_size, features)
        key_spectra = torch.fft.rfft(self.keys.to(device=flat.device, dtype=flat.dtype), dim=-1)
        spectra = torch.fft.rfft(grouped, dim=-1) * key_spectra
        return torch.fft.irfft(spectra.sum(dim=1), n=features, dim=-1)

    def add_extras(self, payload: Payload, tokens: torch.Tensor, plan: Plan) -> None:
        payload.batch_size = int(tokens.shape[0])

    # ---------------------------------------------------------------- server side
    def received_leaf(self, payload: Payload) -> torch.Tensor:
        encoded = payload["activations"]
        if encoded.ndim != 2 or encoded.shape[1] != self.spec.sample_features:
            raise PayloadError(
                f"c3sl payload activations must be G x {self.spec.sample_features}, "
                f"got {tuple(encoded.shape)}"
            )
        return encoded.float()

    def num_samples(self, payload: Payload, leaf: torch.Tensor) -> int:
        return self._batch_size(payload, leaf.shape[0])

    def decoder_forward(self, leaf: torch.Tensor, payload: Payload) -> torch.Tensor:
        batch = self._batch_size(payload, leaf.shape[0])
        features = self.spec.sample_features
        key_spectra = torch.fft.rfft(self.keys.to(device=leaf.device, dtype=leaf.dtype), dim=-1)
        spectra = torch.fft.rfft(leaf, dim=-1).unsqueeze(1) * key_spectra.conj()
        slots = torch.fft.irfft(spectra, n=features, dim=-1)
        slots = slots.reshape(-1, self.spec.num_tokens, self.spec.dim)
        return slots[:batch]

    def _batch_size(self, payload: Payload, groups: int) -> int:
        batch = payload.batch_size
        if batch is None:
            raise PayloadError("c3sl payload needs its batch_size")
        if self.num_groups(batch) != groups:
            raise PayloadError(
                f"c3sl payload batch_size {batch} does not match {groups} group(s) "
                f"of {self.group_size}"
            )
        return batch
