"""Every random choice is drawn from a named stream of the run's seed."""

from __future__ import annotations

import zlib

import torch


def stream_seed(seed: int, stream: str) -> int:
    """A stable 63-bit seed for ``stream`` (e.g. "data", "plan", "client-3") of ``seed``."""
    return (int(seed) * 1_000_003 + zlib.crc32(stream.encode())) % (2**63 - 1)


def generator(seed: int, stream: str, device: str | torch.device = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(stream_seed(seed, stream))
