"""The in-process split-learning reference: same math as the Flower path, one process.

Clients take turns (vanilla split learning): each runs its local batches through the
shared head, the head's weights are relayed to the next client (bytes counted as
``weights``), and every client keeps its own optimizer state. Each step goes client ->
bytes -> server -> bytes -> client through a :class:`~fedadc.wire.Ledger`, so the byte
counts are those of real messages. Training stops when the communication budget would be
exceeded by the next step, or after ``max_epochs``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field

import torch

from fedadc.compression.base import Compressor
from fedadc.compression.registry import create_compressor
from fedadc.data.digits import digits
from fedadc.data.partition import partition_indices
from fedadc.data.tensors import ImageData, ImageSplit, batches
from fedadc.model.split import SplitViT, split_vit
from fedadc.seeding import generator
from fedadc.train.config import TrainConfig
from fedadc.train.evaluate import EvalResult, evaluate
from fedadc.train.roles import SplitClient, SplitServer
from fedadc.wire.ledger import Ledger
from fedadc.wire.payload import Kind, Payload, WireFormat

log = logging.getLogger("fedadc")


@dataclass
class TrainResult:
    config: TrainConfig
    history: list[dict[str, float]]
    ledger: Ledger
    split: SplitViT
    compressor: Compressor
    steps: int
    stop_reason: str
    final: EvalResult = field(default=None)  # type: ignore[assignment]

    def summary(self) -> dict[str, object]:
        return {
            "method": self.config.method,
            "method_params": dict(self.config.method_params),
            "steps": self.steps,
            "stop_reason": self.stop_reason,
            "final_accuracy": self.final.accuracy,
            "final_loss": self.final.loss,
            **self.ledger.summary(),
        }


def load_data(cfg: TrainConfig) -> ImageData:
    if cfg.data == "digits":
        return digits(seed=cfg.seed)
    raise ValueError(f"unknown data {cfg.data!r}; the reference trainer knows: ['digits']")


def build_split(cfg: TrainConfig, data: ImageData) -> tuple[SplitViT, Compressor]:
    """Model and compressor, initialised from the run's seed."""
    torch.manual_seed(cfg.seed)
    kwargs = dict(cfg.model.kwargs)
    channels, height, width = data.image_shape
    if not cfg.model.pretrained and cfg.model.checkpoint_path is None:
        kwargs.setdefault("img_size", (height, width))
        kwargs.setdefault("in_chans", channels)
    split = split_vit(
        cfg.model.name,
        cfg.model.split_at,
        num_classes=data.num_classes,
        pretrained=cfg.model.pretrained,
        checkpoint_path=cfg.model.checkpoint_path,
        **kwargs,
    )
    compressor = create_compressor(cfg.method, split.spec, **cfg.method_params)
    device = torch.device(cfg.device)
    split.head.to(device)
    split.tail.to(device)
    compressor.to(device)
    return split, compressor


def train_reference(cfg: TrainConfig, data: ImageData | None = None) -> TrainResult:
    """Train split learning in one process and return history, ledger and models."""
    data = data if data is not None else load_data(cfg)
    device = torch.device(cfg.device)
    split, compressor = build_split(cfg, data)
    spec = split.spec
    client_params = [*split.head.parameters(), *compressor.encoder.parameters()]
    server_params = [*split.tail.parameters(), *compressor.decoder.parameters()]
    # One optimizer per client over the shared head: the head is relayed, Adam state is local.
    client_opts = [
        torch.optim.Adam(client_params, lr=cfg.learning_rate) for _ in range(cfg.num_clients)
    ]
    server = SplitServer(
        split.tail, compressor, torch.optim.Adam(server_params, lr=cfg.learning_rate), device
    )
    plan_gen = generator(cfg.seed, "plan")
    data_gen = generator(cfg.seed, "data")
    parts = (
        [torch.arange(len(data.train))]
        if cfg.num_clients == 1
        else partition_indices(
            data.train.labels,
            cfg.num_clients,
            kind=cfg.partition,
            seed=cfg.seed,
            alpha=cfg.partition_alpha,
            classes_per_client=cfg.classes_per_client,
        )
    )
    client_data = [data.train.subset(p) for p in parts]
    for c, part in enumerate(client_data):
        hist = torch.bincount(part.labels, minlength=data.num_classes).tolist()
        log.info("client %d: %d samples, label histogram %s", c, len(part), hist)
        if len(part) < cfg.batch_size:
            log.warning(
                "client %d has %d samples, fewer than batch_size=%d: it takes no step",
                c,
                len(part),
                cfg.batch_size,
            )

    ledger = Ledger(WireFormat(cfg.soft_label_dtype, cfg.hard_label_dtype))
    budget = 2 * cfg.budget_epochs * len(data.train) * spec.uncompressed_bytes(1)
    eval_compressor = _eval_compressor(cfg, compressor)
    log.info(
        "method=%s %s | model=%s split_at=%d tokens=%d dim=%d | clients=%d B=%d lr=%g | "
        "budget=%.3g bytes (%g uncompressed epochs, scope=%s)",
        cfg.method,
        cfg.method_params,
        cfg.model.name,
        cfg.model.split_at,
        spec.num_tokens,
        spec.dim,
        cfg.num_clients,
        cfg.batch_size,
        cfg.learning_rate,
        budget,
        cfg.budget_epochs,
        cfg.budget_scope,
    )

    history: list[dict[str, float]] = []
    step, last_cost, stop_reason, start = 0, 0, "", time.perf_counter()
    epoch = 0
    while not stop_reason:
        epoch += 1
        losses: list[float] = []
        for c, part in enumerate(client_data):
            if cfg.num_clients > 1:
                _relay_head(ledger, client_params, c, epoch, step)
            client = SplitClient(split.head, compressor, client_opts[c], plan_gen)
            for idx in batches(part, cfg.batch_size, data_gen):
                if _spent(ledger, cfg.budget_scope) + last_cost > budget:
                    stop_reason = "budget"
                    break
                before = _spent(ledger, cfg.budget_scope)
                loss = _exchange(client, server, ledger, part, idx, c, epoch, step, spec, device)
                losses.append(loss)
                last_cost = _spent(ledger, cfg.budget_scope) - before
                step += 1
            if stop_reason:
                break
        if not losses and not stop_reason:
            raise ValueError(
                f"no client has a full batch of {cfg.batch_size} samples (largest partition: "
                f"{max(len(p) for p in client_data)}); lower batch_size or num_clients"
            )
        if not stop_reason and cfg.max_epochs is not None and epoch >= cfg.max_epochs:
            stop_reason = "max_epochs"
        result = evaluate(
            split.head, split.tail, data.test, compressor=eval_compressor, device=device
        )
        row = {
            "epoch": epoch,
            "step": step,
            "train_loss": sum(losses) / len(losses) if losses else float("nan"),
            "test_loss": result.loss,
            "test_accuracy": result.accuracy,
            "bytes_up": ledger.total_bytes("up"),
            "bytes_down": ledger.total_bytes("down"),
            "budget_used": _spent(ledger, cfg.budget_scope) / budget,
            "realised_xi": ledger.realised_xi(),
            "wall_s": time.perf_counter() - start,
        }
        history.append(row)
        log.info(
            "epoch %3d | step %5d | train loss %.4f | test acc %.4f loss %.4f | up %s down %s"
            " | budget %5.1f%% | xi %.4f",
            epoch,
            step,
            row["train_loss"],
            result.accuracy,
            result.loss,
            _fmt_bytes(row["bytes_up"]),
            _fmt_bytes(row["bytes_down"]),
            100 * row["budget_used"],
            row["realised_xi"],
        )
    res = TrainResult(cfg, history, ledger, split, compressor, step, stop_reason, result)
    log.info("stopped (%s) after %d steps: test accuracy %.4f", stop_reason, step, result.accuracy)
    return res


def _exchange(
    client: SplitClient,
    server: SplitServer,
    ledger: Ledger,
    part: ImageSplit,
    idx: torch.Tensor,
    client_id: int,
    epoch: int,
    step: int,
    spec,
    device: torch.device,
) -> float:
    images, labels = part.images[idx].to(device), part.labels[idx].to(device)
    batch = len(idx)
    nominal = client.compressor.nominal_xi(batch)
    up = ledger.transmit(
        client.forward(images, labels),
        direction="up",
        client=client_id,
        round=epoch,
        step=step,
        baseline_bytes=spec.uncompressed_bytes(batch),
        nominal_xi=nominal,
    )
    gradient, metrics = server.step(Payload.from_bytes(up))
    down = ledger.transmit(gradient, direction="down", client=client_id, round=epoch, step=step)
    client.backward(Payload.from_bytes(down))
    return metrics.loss


def _relay_head(
    ledger: Ledger, params: list[torch.nn.Parameter], client: int, epoch: int, step: int
) -> None:
    """Count the head handed over to ``client`` via the server (one upload, one download)."""
    payload = Payload()
    for i, p in enumerate(params):
        payload.add(f"p{i}", p.detach(), Kind.WEIGHTS)
    for direction in ("up", "down"):
        ledger.transmit(payload, direction=direction, client=client, round=epoch, step=step)


def _spent(ledger: Ledger, scope: str) -> int:
    if scope == "all":
        return ledger.total_bytes()
    return ledger.total_bytes("up", Kind.ACTIVATIONS) + ledger.total_bytes("down", Kind.GRADIENTS)


def _eval_compressor(cfg: TrainConfig, compressor: Compressor) -> Compressor | None:
    through = (
        compressor.compress_at_eval if cfg.evaluate_compressed is None else cfg.evaluate_compressed
    )
    return compressor if through else None


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000:
            return f"{n:.1f}{unit}"
        n /= 1000
    return f"{n:.1f}TB"


def config_dict(cfg: TrainConfig) -> dict[str, object]:
    return asdict(cfg)
