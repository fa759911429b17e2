"""Typed configuration of a split-learning run (frozen dataclasses, validated once)."""

from __future__ import annotations

from dataclasses import dataclass, field

from fedadc.compression.registry import compressor_params, list_compressors
from fedadc.data.partition import PARTITIONS

BUDGET_SCOPES = ("all", "activations")


@dataclass(frozen=True)
class ModelConfig:
    """A timm ViT and where to cut it.

    ``kwargs`` go to the timm constructor; ``img_size`` and ``in_chans`` default to the
    data's image shape, so a from-scratch model fits any data set.
    """

    name: str = "vit_tiny_patch16_224"
    split_at: int = 3
    pretrained: bool = False
    checkpoint_path: str | None = None
    kwargs: dict[str, object] = field(
        default_factory=lambda: {
            "patch_size": 2,
            "embed_dim": 64,
            "depth": 6,
            "num_heads": 4,
            "mlp_ratio": 2.0,
        }
    )


@dataclass(frozen=True)
class TrainConfig:
    """Everything the in-process reference trainer needs.

    The communication budget is ``budget_epochs`` uncompressed epochs (the paper's Gamma):
    ``budget_epochs x N_train x n x d x 4`` bytes in each direction. ``budget_scope='all'``
    charges every byte sent (labels, indices, headers, head relays); ``'activations'``
    charges activations and gradients only, as the paper does.
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    method: str = "adc"
    method_params: dict[str, object] = field(default_factory=lambda: {"xi": 0.1})
    data: str = "digits"
    num_clients: int = 1
    partition: str = "iid"
    partition_alpha: float = 0.5
    classes_per_client: int = 2
    batch_size: int = 64
    lr: float | None = None
    """Adam learning rate for head and tail; None: 1e-4 when fine-tuning pretrained weights
    (the paper), 1e-3 when training from scratch."""
    budget_epochs: float = 10.0
    budget_scope: str = "all"
    max_epochs: int | None = 100
    evaluate_compressed: bool | None = None
    soft_label_dtype: str = "float32"
    hard_label_dtype: str = "int64"
    seed: int = 0
    device: str = "cpu"

    @property
    def learning_rate(self) -> float:
        if self.lr is not None:
            return self.lr
        pretrained = self.model.pretrained or self.model.checkpoint_path is not None
        return 1e-4 if pretrained else 1e-3

    def __post_init__(self) -> None:
        if self.method not in list_compressors():
            raise ValueError(f"unknown method {self.method!r}; choose one of {list_compressors()}")
        unknown = sorted(set(self.method_params) - set(compressor_params(self.method)))
        if unknown:
            raise ValueError(
                f"unknown method_params {unknown} for method {self.method!r}; valid: "
                f"{sorted(compressor_params(self.method))}"
            )
        if self.partition not in PARTITIONS:
            raise ValueError(f"partition must be one of {PARTITIONS}, got {self.partition!r}")
        if self.budget_scope not in BUDGET_SCOPES:
            raise ValueError(
                f"budget_scope must be one of {BUDGET_SCOPES}, got {self.budget_scope!r}"
            )
        for name in ("num_clients", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr is not None and self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.budget_epochs <= 0:
            raise ValueError(f"budget_epochs must be > 0, got {self.budget_epochs}")
        if self.max_epochs is not None and self.max_epochs < 1:
            raise ValueError(f"max_epochs must be >= 1 or None, got {self.max_epochs}")
