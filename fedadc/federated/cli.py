"""``fedadc-train``: the in-process reference run, configured like the Flower app.

fedadc-train                                   # ADC xi=0.1 on digits, 10 clients
fedadc-train method=topk xi=0.05 federation.rounds=20 partition=iid
fedadc-train --resume runs/20261123-101500-adc-s0
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from fedadc.federated.results import RunDirectory


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="fedadc-train",
        description="In-process federated split learning (the reference for `flwr run .`). "
        "Arguments are Hydra overrides of conf/config.yaml, e.g. method=topk xi=0.05.",
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides (key=value)")
    parser.add_argument("--resume", type=Path, help="continue the run in this directory")
    parser.add_argument("--name", help="run directory name under results_dir")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stdout)

    from fedadc.config import compose, to_run_config
    from fedadc.federated.reference import train_reference

    try:
        if args.resume is not None:
            from omegaconf import OmegaConf

            results = RunDirectory(args.resume.resolve())
            saved = json.loads((results.path / "config.json").read_text())
            run = to_run_config(OmegaConf.create(saved))
        else:
            run = compose(args.overrides)
            results = RunDirectory.create(run, args.name)
        result = train_reference(run, results=results, resume=args.resume is not None)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    summary = json.loads((results.path / "summary.json").read_text())
    print(json.dumps({k: v for k, v in summary.items() if k != "bytes_by_kind"}, indent=2))
    print(f"stop reason: {result.stop_reason}; results in {results.path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
