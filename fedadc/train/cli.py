"""``fedadc-train`` / ``python -m fedadc.train``: the in-process reference run from a shell."""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import sys
from pathlib import Path

from fedadc.compression.registry import compressor_params, list_compressors
from fedadc.data.partition import PARTITIONS
from fedadc.train.config import BUDGET_SCOPES, ModelConfig, TrainConfig
from fedadc.train.reference import config_dict, train_reference


def _param(text: str) -> tuple[str, object]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"method parameter must look like key=value, got {text!r}")
    key, value = text.split("=", 1)
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def build_parser() -> argparse.ArgumentParser:
    d = TrainConfig()
    p = argparse.ArgumentParser(
        prog="fedadc-train",
        description="In-process split learning of a ViT with a compression method "
        "(the reference for the Flower app). Default: ADC xi=0.1 on scikit-learn digits.",
    )
    p.add_argument("--method", default=d.method, choices=list_compressors())
    p.add_argument(
        "-p",
        "--param",
        action="append",
        type=_param,
        default=None,
        metavar="KEY=VALUE",
        help="method parameter, repeatable (default for adc: xi=0.1); e.g. -p xi=0.05",
    )
    p.add_argument("--num-clients", type=int, default=d.num_clients)
    p.add_argument("--partition", default=d.partition, choices=PARTITIONS)
    p.add_argument("--alpha", type=float, default=d.partition_alpha, help="Dirichlet alpha")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--budget-epochs", type=float, default=d.budget_epochs)
    p.add_argument("--budget-scope", default=d.budget_scope, choices=BUDGET_SCOPES)
    p.add_argument("--max-epochs", type=int, default=d.max_epochs)
    p.add_argument("--model", default=ModelConfig().name, help="timm ViT name")
    p.add_argument("--split-at", type=int, default=ModelConfig().split_at)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--device", default=d.device)
    p.add_argument("--out", type=Path, default=None, help="write summary.json, history and ledger")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stdout)
    params = dict(args.param) if args.param else ({"xi": 0.1} if args.method == "adc" else {})
    required = [
        k
        for k, v in compressor_params(args.method).items()
        if v is inspect.Parameter.empty and k not in params
    ]
    if required:
        print(f"error: method {args.method!r} needs -p {required[0]}=VALUE", file=sys.stderr)
        return 2
    model = ModelConfig(name=args.model, split_at=args.split_at)
    if args.model != ModelConfig().name:
        model = ModelConfig(name=args.model, split_at=args.split_at, kwargs={})
    try:
        cfg = TrainConfig(
            model=model,
            method=args.method,
            method_params=params,
            num_clients=args.num_clients,
            partition=args.partition,
            partition_alpha=args.alpha,
            batch_size=args.batch_size,
            lr=args.lr,
            budget_epochs=args.budget_epochs,
            budget_scope=args.budget_scope,
            max_epochs=args.max_epochs,
            seed=args.seed,
            device=args.device,
        )
        result = train_reference(cfg)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    summary = result.summary()
    print(json.dumps({k: v for k, v in summary.items() if k != "bytes_by_kind"}, indent=2))
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "config.json").write_text(json.dumps(config_dict(cfg), indent=2))
        (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
        (args.out / "history.json").write_text(json.dumps(result.history, indent=2))
        result.ledger.write_csv(args.out / "ledger.csv")
        print(f"results written to {args.out.resolve()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
