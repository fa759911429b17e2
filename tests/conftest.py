import pytest
import torch

from fedadc.model.split import SplitViT, split_vit
from tests.flower_support import LocalFlower

torch.set_num_threads(1)

TINY_VIT = dict(
    num_classes=5,
    img_size=8,
    patch_size=2,
    embed_dim=24,
    depth=4,
    num_heads=3,
    in_chans=1,
    mlp_ratio=2.0,
)


def make_tiny_split(split_at: int = 2, seed: int = 0, **overrides: object) -> SplitViT:
    """A from-scratch ViT on 8x8 gray images: 16 patches + CLS = 17 tokens of width 24."""
    torch.manual_seed(seed)
    return split_vit("vit_tiny_patch16_224", split_at, **{**TINY_VIT, **overrides})


@pytest.fixture
def tiny_split() -> SplitViT:
    return make_tiny_split()


@pytest.fixture(scope="module")
def flower(tmp_path_factory):
    """A private FLWR_HOME and SuperLink ports per test module; its SuperLink is stopped
    after the module."""
    local = LocalFlower(tmp_path_factory.mktemp("flwr-home"))
    yield local
    local.stop_superlink()
