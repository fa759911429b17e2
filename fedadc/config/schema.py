"""The typed run configuration: Hydra composes YAML, this is what the code sees.

Every group of ``conf/`` maps to one frozen dataclass here. They are plain data: OmegaConf
types them (:mod:`fedadc.config.typed`), ``__post_init__`` checks only what OmegaConf cannot
express (a choice among strings, a range), and what needs timm, a compressor or torch is
checked by :func:`fedadc.config.validate.validate`. Each list of choices is owned by the
module that acts on it (data sources, partitions, augmentations, wire dtypes) and only
imported here. Library code never sees ``DictConfig`` or Flower's ``Context``.
"""

from __future__ import annotations

import functools
import typing
from dataclasses import dataclass, field, fields
from typing import Any

from fedadc.data.normalize import check_normalize
from fedadc.data.partition import PARTITIONS
from fedadc.data.sources import check_source
from fedadc.data.transforms import AUGMENT_KINDS
from fedadc.model.precision import PRECISIONS
from fedadc.schedule import SCHEDULES, LrCurve
from fedadc.wire.payload import HARD_LABEL_DTYPES, SOFT_LABEL_DTYPES
from fedadc.wire.precision import PAYLOAD_DTYPES

CLIENT_STATES = ("reset", "keep")
TAIL_UPDATES = ("per_client", "joint")
SHAPES = ("standard", "u")

CONSUMED_KEYS = ("xi",)
"""Top-level keys of ``conf/`` that exist only to be interpolated into groups (not
:class:`RunConfig` fields)."""

MODES = ("sfl", "sl")
BUDGET_SCOPES = ("all", "activations")
HEAD_UPDATES = ("accumulated", "stale")


def _choice(group: str, name: str, value: object, choices: tuple[str, ...]) -> None:
    """A string with a fixed set of values: OmegaConf 2.3 cannot type ``Literal[...]``
    fields, so the choice is checked here, naming the key and the valid values."""
    if value not in choices:
        raise ValueError(f"{group}.{name} must be one of {list(choices)}, got {value!r}")


def _at_least(group: str, name: str, value: float, low: float) -> None:
    """OmegaConf types values but has no ranges: the bound is checked here."""
    if value < low:
        raise ValueError(f"{group}.{name} must be >= {low}, got {value}")


@functools.cache
def field_types(cls: type) -> dict[str, Any]:
    """Field name -> resolved annotation of a config dataclass (annotations are postponed)."""
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in typing.get_type_hints(cls).items() if k in names}


@dataclass(frozen=True)
class ModelConfig:
    """A timm ViT and where to cut it. ``kwargs`` go to the timm constructor; a
    from-scratch model takes ``img_size``/``in_chans`` from the data unless given."""

    name: str = "vit_tiny_patch16_224"
    split_at: int = 3
    pretrained: bool = False
    checkpoint_path: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    end_blocks: int = 0
    """U-shaped split learning (``federation.shape=u``): the model's last blocks that stay
    on the client with the final norm and classifier (0: only norm and classifier)."""
    head_trainable: bool = True
    """False: the client head is frozen (e.g. a pretrained backbone). No gradient travels
    back, so clients stream ``steps_per_message`` payloads per message and the result does
    not depend on it (docs/streaming.md)."""

    def __post_init__(self) -> None:
        _at_least("model", "split_at", self.split_at, 1)
        _at_least("model", "end_blocks", self.end_blocks, 0)


@dataclass(frozen=True)
class DataConfig:
    """Where images come from and how they are prepared.

    ``source``: ``digits`` (embedded), ``hub`` (Hugging Face name in ``name``), ``disk``
    (a ``save_to_disk`` folder in ``path``), ``imagefolder`` (class sub-folders in
    ``path``), ``parquet`` (files or a folder in ``path``). Without a test split, a
    stratified ``test_fraction`` of train is held out (seeded). ``normalize`` picks the
    per-channel pixel mean/std (``auto``: the training split's, a pretrained model's own;
    see :mod:`fedadc.data.normalize`); ``mean``/``std`` (one value per channel, pixels in
    [0, 1]) give them explicitly.
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
    normalize: str = "auto"
    mean: list[float] | None = None
    std: list[float] | None = None

    def __post_init__(self) -> None:
        check_source(self.source, self.name, self.path)
        _choice("data", "augment", self.augment, AUGMENT_KINDS)
        check_normalize(self.normalize, self.mean, self.std)
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
    """A compression method by registry name and its constructor parameters (checked
    against the registry by :func:`fedadc.config.validate.validate`, not here: building
    a config builds no compressor)."""

    name: str = "adc"
    params: dict[str, Any] = field(default_factory=lambda: {"xi": 0.1})


@dataclass(frozen=True)
class OptimConfig:
    """Adam for head and tail. ``lr=None``: 1e-4 when fine-tuning pretrained weights (the
    paper), 1e-3 from scratch.

    ``schedule``/``warmup``/``cooldown``: the lr curve over the run's rounds x local steps
    (fedadc/schedule.py), the same for heads and tail. ``client_state``: what a client's
    Adam moments do between rounds: ``reset`` (a fresh optimizer every round) or ``keep``
    (each client continues its own moments; they stay on the client, nothing more is sent).
    """

    lr: float | None = None
    weight_decay: float = 0.0
    schedule: str = "constant"
    warmup: float = 0.0
    cooldown: float = 0.0
    client_state: str = "reset"

    def __post_init__(self) -> None:
        if self.lr is not None and self.lr <= 0:
            raise ValueError(f"optim.lr must be > 0, got {self.lr}")
        _choice("optim", "schedule", self.schedule, SCHEDULES)
        _choice("optim", "client_state", self.client_state, CLIENT_STATES)
        if not 0.0 <= self.warmup < 1.0:
            raise ValueError(
                f"optim.warmup is a fraction of the run's steps in [0, 1), got {self.warmup}"
            )
        if not 0.0 <= self.cooldown <= 1.0 or self.warmup + self.cooldown > 1.0:
            raise ValueError(
                "optim.cooldown is a fraction of the run's steps in [0, 1] with warmup + "
                f"cooldown <= 1, got cooldown {self.cooldown} (warmup {self.warmup})"
            )
        if self.cooldown > 0 and self.schedule != "constant":
            raise ValueError(
                f"optim.cooldown decays a constant lr; schedule {self.schedule!r} already "
                "decays: set optim.cooldown=0 or optim.schedule=constant"
            )


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
    tail_update: str = "per_client"
    """``per_client``: one tail step per client payload, clients in turn (the tail takes N
    steps per client step); ``joint``: one tail step per exchange on every client's
    payloads as one batch (SplitFed-V1's average of per-client server updates)."""
    head_momentum: float = 0.0
    """FedAvgM (Hsu et al., 2019): server momentum on the heads' averaged update; 0 is
    plain FedAvg. The heads train only 1/N of the tail's steps, momentum carries them on."""
    head_lr: float = 1.0
    """Server learning rate on the heads' averaged update (FedAvgM's eta, Reddi et al.
    2021): the new head is ``previous - head_lr * velocity``; 1 with momentum 0 is FedAvg."""
    shape: str = "standard"
    """``standard``: the server holds the tail and computes the loss (clients send labels);
    ``u``: U-shaped, the client keeps the model's end (``model.end_blocks``, final norm,
    classifier) and its labels, the server holds the middle blocks (docs/ushape.md)."""
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
        _choice("federation", "tail_update", self.tail_update, TAIL_UPDATES)
        _choice("federation", "shape", self.shape, SHAPES)
        if self.shape == "u":
            if self.mode == "sfl" and self.tail_update != "joint":
                raise ValueError(
                    "federation.shape=u trains the server's middle blocks once per exchange on "
                    "every client's outputs (their losses live on the clients): set "
                    "federation.tail_update=joint, or use the preset federation=ushape"
                )
            if self.messages_steps != 1:
                raise ValueError(
                    "federation.shape=u is exact split learning with two round trips per "
                    f"step; it needs federation.steps_per_message=1, got {self.steps_per_message}"
                )
        if not self.head_lr > 0:
            raise ValueError(f"federation.head_lr must be > 0, got {self.head_lr}")
        if not 0.0 <= self.head_momentum < 1.0:
            raise ValueError(
                f"federation.head_momentum must be in [0, 1), got {self.head_momentum}"
            )
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
class WireConfig:
    """Wire dtypes (:class:`fedadc.wire.WireFormat`): labels, and the precision of float
    activations / gradients stacked on any method (``docs/wire.md``)."""

    soft_label_dtype: str = "float32"
    hard_label_dtype: str = "int64"
    activation_dtype: str = "float32"
    gradient_dtype: str = "float32"

    def __post_init__(self) -> None:
        _choice("wire", "soft_label_dtype", self.soft_label_dtype, SOFT_LABEL_DTYPES)
        _choice("wire", "hard_label_dtype", self.hard_label_dtype, HARD_LABEL_DTYPES)
        _choice("wire", "activation_dtype", self.activation_dtype, PAYLOAD_DTYPES)
        _choice("wire", "gradient_dtype", self.gradient_dtype, PAYLOAD_DTYPES)


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
    wire: WireConfig = field(default_factory=WireConfig)
    precision: str = "fp32"
    """``bf16``: head and tail forwards under ``torch.autocast`` (fedadc.model.precision).
    A top-level key like ``device``: it says how the device computes both model parts, not
    what the optimizer or the architecture is; unlike ``device`` it changes results, so it
    is part of the run's identity."""

    def __post_init__(self) -> None:
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1 (or null: torch's default), got {self.threads}")
        if self.precision not in PRECISIONS:
            raise ValueError(
                f"precision must be one of {list(PRECISIONS)}, got {self.precision!r} "
                "(bf16: mixed precision for head and tail)"
            )

    @property
    def learning_rate(self) -> float:
        if self.optim.lr is not None:
            return self.optim.lr
        return 1e-4 if (self.model.pretrained or self.model.checkpoint_path) else 1e-3

    @property
    def lr_curve(self) -> LrCurve:
        fed, optim = self.federation, self.optim
        return LrCurve(
            self.learning_rate,
            fed.rounds,
            fed.local_steps,
            optim.schedule,
            optim.warmup,
            optim.cooldown,
        )
