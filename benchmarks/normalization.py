"""Fixed (x - 0.5) / 0.5 versus the default data-set statistics on a generated, unseen set.

Writes a 28x28 grayscale imagefolder of 10 drawn shapes (dim strokes on a dark background,
so its statistics are far from 0.5 / 0.5), then trains the same federated ADC run twice,
in process: ``data.normalize=auto`` (the training split's statistics) and the old fixed
constant (``data.mean=[0.5] data.std=[0.5]``). Prints the statistics and final accuracies
side by side, per seed and averaged.

    python benchmarks/normalization.py --seeds 0 1 --rounds 10
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from fedadc.config import compose
from fedadc.federated.build import load_data
from fedadc.federated.reference import train_reference

SHAPES = ("circle", "square", "triangle", "cross", "hline", "vline", "diag", "ring", "x", "t")


def draw(shape: str, rng: np.random.Generator, size: int = 28) -> Image.Image:
    """One dim shape of random position, extent and stroke on a dark, noisy background."""
    image = Image.new("L", (size, size), 0)
    pen = ImageDraw.Draw(image)
    r = int(rng.integers(6, 11))
    cx, cy = (int(v) for v in rng.integers(r + 1, size - r - 1, 2))
    ink, width = int(rng.integers(70, 160)), int(rng.integers(1, 3))
    box = (cx - r, cy - r, cx + r, cy + r)
    if shape == "circle":
        pen.ellipse(box, fill=ink)
    elif shape == "square":
        pen.rectangle(box, fill=ink)
    elif shape == "triangle":
        pen.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=ink)
    elif shape == "ring":
        pen.ellipse(box, outline=ink, width=width + 1)
    else:
        lines = {
            "cross": [(cx - r, cy, cx + r, cy), (cx, cy - r, cx, cy + r)],
            "hline": [(cx - r, cy, cx + r, cy)],
            "vline": [(cx, cy - r, cx, cy + r)],
            "diag": [(cx - r, cy - r, cx + r, cy + r)],
            "x": [(cx - r, cy - r, cx + r, cy + r), (cx - r, cy + r, cx + r, cy - r)],
            "t": [(cx - r, cy - r, cx + r, cy - r), (cx, cy - r, cx, cy + r)],
        }[shape]
        for line in lines:
            pen.line(line, fill=ink, width=width + 1)
    pixels = np.asarray(image, dtype=np.float64) + rng.normal(4.0, 4.0, (size, size))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), mode="L")


def write_shapes(root: Path, train_per_class: int, test_per_class: int) -> Path:
    rng = np.random.default_rng(1234)
    for split, count in (("train", train_per_class), ("test", test_per_class)):
        for shape in SHAPES:
            folder = root / split / shape
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                draw(shape, rng).save(folder / f"{i}.png")
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--local-steps", type=int, default=8)
    parser.add_argument("--train-per-class", type=int, default=100)
    parser.add_argument("--patch-size", type=int, default=4)
    args = parser.parse_args()
    variants = {"dataset (default)": [], "fixed 0.5/0.5": ["data.mean=[0.5]", "data.std=[0.5]"]}
    with tempfile.TemporaryDirectory() as tmp:
        path = write_shapes(Path(tmp) / "shapes", args.train_per_class, 30)
        base = [
            "data=imagefolder",
            f"data.path={path}",
            f"model.kwargs.patch_size={args.patch_size}",
            f"federation.rounds={args.rounds}",
            f"federation.local_steps={args.local_steps}",
            "federation.num_clients=10",
            "federation.budget_epochs=null",
        ]
        acc: dict[str, list[float]] = {name: [] for name in variants}
        for seed in args.seeds:
            for name, extra in variants.items():
                run = compose([*base, *extra, f"seed={seed}"])
                norm = load_data(run).normalization
                start = time.perf_counter()
                result = train_reference(run)
                final = result.history[-1]["test_accuracy"]
                acc[name].append(final)
                print(
                    f"seed {seed}  {name:18s} mean={norm.mean} std={norm.std}  "  # type: ignore[union-attr]
                    f"final acc {final:.3f}  ({time.perf_counter() - start:.0f} s)",
                    flush=True,
                )
        print("\nmean final accuracy over seeds", args.seeds)
        for name, values in acc.items():
            print(f"  {name:18s} {np.mean(values):.3f}  (min {np.min(values):.3f})")
        diff = np.mean(acc["dataset (default)"]) - np.mean(acc["fixed 0.5/0.5"])
        print(f"  dataset - fixed    {diff:+.3f}")


if __name__ == "__main__":
    main()
