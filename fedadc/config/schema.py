"""The typed run configuration: Hydra composes YAML, this is what the code sees.

Every group of ``conf/`` maps to one frozen dataclass here; :func:`fedadc.config.compose`
turns a composed ``DictConfig`` into a :class:`RunConfig` and rejects unknown keys with
the list of valid ones. Library code never sees ``DictConfig`` or Flower's ``Context``.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field

from fedadc.compression.registry import compressor_params, list_compressors

SOURCES = ("digits", "hub", "disk", "imagefolder", "parquet")
AUGMENTATIONS = ("auto", "paper", "light", "none")
PARTITIONS = ("iid", "dirichlet", "pathological")
MODES = ("sfl", "sl")
BUDGET_SCOPES = ("all", "activations")
HEAD_UPDATES = ("accumulated", "stale")
CHANNELS = ("clean",)
SOFT_LABEL_DTYPES = ("float32", "float16")
HARD_LABEL_DTYPES = ("int64", "int32", "int16")
MODEL_EXAMPLES = ("vit_tiny_patch16_224", "deit_tiny_patch16_224", "deit_small_patch16_224")


def _choice(group: str, name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{group}.{name} must be one of {list(choices)}, got {value!r}")


def _at_least(group: str, name: str, value: float, low: float) -> None:
    if value < low:
        raise ValueError(f"{group}.{name} must be >= {low}, got {value}")


def _check_model_name(name: str) -> None:
    import timm

    if not timm.is_model(name) and name not in timm.list_models(pretrained=True):
        vits = timm.list_models("*vit*") + timm.list_models("deit*")
        close = difflib.get_close_matches(name, vits, n=5) or list(MODEL_EXAMPLES)
        raise ValueError(
            f"model.name {name!r} is not a timm model; valid choices are timm's Vision "
            f"Transformers (timm.list_models('*vit*')), e.g. {close}"
        )


def _check_method_params(name: str, params: dict[str, object], valid: dict[str, object]) -> None:
    """Build the method on a dummy split, so a bad value fails now, naming its key."""
    import inspect

    from fedadc.compression.registry import create_compressor
    from fedadc.model.spec import TokenSpec

    required = sorted(k for k, v in valid.items() if v is inspect.Parameter.empty)
    missing = [k for k in required if k not in params]
    if missing and not (name == "adc" and {"batch_ratio", "token_ratio"} <= set(params)):
        raise ValueError(
            f"method {name!r} needs method.params {missing} (e.g. set xi=0.1); "
            f"valid params: {sorted(valid)}"
        )
    try:
        create_compressor(name, TokenSpec(num_tokens=5, dim=4, num_classes=2), **params)
    except (ValueError, TypeError) as err:
        text = str(err)
        if any(text.startswith(k) for k in params):  # "ratio must be ..." names its key
            raise ValueError(f"method.params.{text}") from None
        raise ValueError(f"method.params of {name!r}: {text}") from None


@dataclass(frozen=True)
class ModelConfig:
    """A timm ViT and where to cut it. ``kwargs`` go to the timm constructor; a
    from-scratch model takes ``img_size``/``in_chans`` from the data unless given."""

    name: str = "vit_tiny_patch16_224"
    split_at: int = 3
    pretrained: bool = False
    checkpoint_path: str | None = None
    kwargs: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _at_least("model", "split_at", self.split_at, 1)
        _check_model_name(self.name)


@dataclass(frozen=True)
class DataConfig:
    """Where images come from and how they are prepared.

    ``source``: ``digits`` (embedded), ``hub`` (Hugging Face name in ``name``), ``disk``
    (a ``save_to_disk`` folder in ``path``), ``imagefolder`` (class sub-folders in
    ``path``), ``parquet`` (files or a folder in ``path``). Without a test split, a
    stratified ``test_fraction`` of train is held out (seeded).
    """

    source: str = "digits"
    name: str | None = None
    path: str | None = None
    image_column: str = "image"
    label_column: str = "label"
    train_split: str = "train"
    test_split: str | None = "test"
    test_fraction: float = 0.2
    img_size: int | None = None
    augment: str = "auto"
    max_train_samples: int | None = None
    max_test_samples: int | None = None

    def __post_init__(self) -> None:
        _choice("data", "source", self.source, SOURCES)
        _choice("data", "augment", self.augment, AUGMENTATIONS)
        if self.source == "hub" and not self.name:
            raise ValueError("data.name must name a Hugging Face dataset when data.source=hub")
        if self.source in ("disk", "imagefolder", "parquet") and not self.path:
            raise ValueError(f"data.path is required when data.source={self.source}")
        if not 0.0 < self.test_fraction < 1.0:
            raise ValueError(f"data.test_fraction must be in (0, 1), got {self.test_fraction}")


@dataclass(frozen=True)
class PartitionConfig:
    kind: str = "dirichlet"
    alpha: float = 0.5
    min_partition_size: int = 2
    classes_per_client: int = 2

    def __post_init__(self) -> None:
        _choice("partition", "kind", self.kind, PARTITIONS)
        if self.alpha <= 0:
            raise ValueError(f"partition.alpha must be > 0, got {self.alpha}")


@dataclass(frozen=True)
class MethodConfig:
    name: str = "adc"
    params: dict[str, object] = field(default_factory=lambda: {"xi": 0.1})

    def __post_init__(self) -> None:
        if self.name not in list_compressors():
            raise ValueError(f"method.name must be one of {list_compressors()}, got {self.name!r}")
        valid = compressor_params(self.name)
        unknown = sorted(set(self.params) - set(valid))
        if unknown:
            raise ValueError(
                f"unknown method.params {unknown} for method {self.name!r}; valid: {sorted(valid)}"
            )
        _check_method_params(self.name, self.params, valid)


@dataclass(frozen=True)
class OptimConfig:
    """Adam for head and tail. ``lr=None``: 1e-4 when fine-tuning pretrained weights (the
    paper), 1e-3 from scratch."""

    lr: float | None = None
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        if self.lr is not None and self.lr <= 0:
            raise ValueError(f"optim.lr must be > 0, got {self.lr}")


@dataclass(frozen=True)
class FederationConfig:
    """Rounds, clients and the exchange.

    ``mode``: ``sfl`` (sampled clients in parallel, one shared tail, FedAvg of heads) or
    ``sl`` (clients one after another, the head relayed). ``local_steps`` per client per
    round; ``steps_per_message`` (S) batches per message (S=1: exact split learning; 0: all
    local steps in one message). ``budget_epochs``: stop when that many uncompressed epochs
    of bytes are spent (None: rounds only).
    """

    mode: str = "sfl"
    num_clients: int = 10
    fraction_train: float = 1.0
    min_train_clients: int = 1
    rounds: int = 10
    local_steps: int = 4
    steps_per_message: int = 1
    head_update: str = "accumulated"
    batch_size: int = 32
    budget_epochs: float | None = 10.0
    budget_scope: str = "all"
    eval_every: int = 1
    timeout_s: float = 600.0
    max_payload_bytes: int | None = None
    """Largest payload (one step's bytes) the server accepts from a client; None: twice
    the uncompressed B x n x d float32 size plus labels and headers."""

    def __post_init__(self) -> None:
        _choice("federation", "mode", self.mode, MODES)
        _choice("federation", "budget_scope", self.budget_scope, BUDGET_SCOPES)
        _choice("federation", "head_update", self.head_update, HEAD_UPDATES)
        for name in (
            "num_clients",
            "min_train_clients",
            "rounds",
            "local_steps",
            "batch_size",
            "eval_every",
        ):
            _at_least("federation", name, getattr(self, name), 1)
        _at_least("federation", "steps_per_message", self.steps_per_message, 0)
        if not 0.0 < self.fraction_train <= 1.0:
            raise ValueError(
                f"federation.fraction_train must be in (0, 1], got {self.fraction_train}"
            )
        if self.min_train_clients > self.num_clients:
            raise ValueError(
                f"federation.min_train_clients={self.min_train_clients} can never be met with "
                f"federation.num_clients={self.num_clients}; lower it or add clients"
            )
        if self.timeout_s <= 0:
            raise ValueError(f"federation.timeout_s must be > 0, got {self.timeout_s}")
        if self.max_payload_bytes is not None:
            _at_least("federation", "max_payload_bytes", self.max_payload_bytes, 1)
        if self.budget_epochs is not None and self.budget_epochs <= 0:
            raise ValueError(f"federation.budget_epochs must be > 0, got {self.budget_epochs}")

    @property
    def messages_steps(self) -> int:
        """S resolved: 0 means all local steps in one message."""
        return self.local_steps if self.steps_per_message == 0 else self.steps_per_message


@dataclass(frozen=True)
class ChannelConfig:
    kind: str = "clean"

    def __post_init__(self) -> None:
        _choice("channel", "kind", self.kind, CHANNELS)


@dataclass(frozen=True)
class WireConfig:
    soft_label_dtype: str = "float32"
    hard_label_dtype: str = "int64"

    def __post_init__(self) -> None:
        _choice("wire", "soft_label_dtype", self.soft_label_dtype, SOFT_LABEL_DTYPES)
        _choice("wire", "hard_label_dtype", self.hard_label_dtype, HARD_LABEL_DTYPES)


@dataclass(frozen=True)
class RunConfig:
    seed: int = 0
    device: str = "cpu"
    threads: int | None = None
    """torch intra-op threads in every process of the run (None: torch's default). CPU
    float results depend on it, so runs compared bit for bit must fix it."""
    results_dir: str = "runs"
    evaluate_compressed: bool | None = None
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    partition: PartitionConfig = field(default_factory=PartitionConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    federation: FederationConfig = field(default_factory=FederationConfig)
    channel: ChannelConfig = field(default_factory=ChannelConfig)
    wire: WireConfig = field(default_factory=WireConfig)

    def __post_init__(self) -> None:
        import torch

        try:
            torch.device(self.device)
        except (RuntimeError, ValueError):
            raise ValueError(
                f"device must be a torch device such as 'cpu', 'cuda' or 'cuda:0', "
                f"got {self.device!r}"
            ) from None
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1 (or null: torch's default), got {self.threads}")

    @property
    def learning_rate(self) -> float:
        if self.optim.lr is not None:
            return self.optim.lr
        return 1e-4 if (self.model.pretrained or self.model.checkpoint_path) else 1e-3
