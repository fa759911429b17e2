"""Splits of a data set on local disk: a ``save_to_disk`` folder, an image folder
(``<split>/<class>/*.png``) or parquet files."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from datasets import Dataset


def load_local_splits(
    source: str,
    path: Path,
    *,
    train_split: str,
    test_split: str | None,
    cache_dir: str | None,
) -> dict[str, Dataset]:
    """All splits found at ``path`` for ``source`` (``disk``, ``imagefolder`` or
    ``parquet``), by name; a single data set is the train split."""
    import datasets

    if not path.exists():
        raise FileNotFoundError(f"data.path={str(path)!r} does not exist (data.source={source})")
    if source == "disk":
        try:
            loaded = datasets.load_from_disk(str(path))
        except FileNotFoundError as exc:
            raise FileNotFoundError(
                f"data.path={str(path)!r} is not a folder written by Dataset.save_to_disk or "
                f"DatasetDict.save_to_disk (data.source=disk): {exc}"
            ) from exc
        if isinstance(loaded, datasets.Dataset):
            # A single split: it is the training data, and the test split is held out.
            return {train_split: loaded}
        return dict(loaded)
    if source == "imagefolder":
        if not path.is_dir():
            raise ValueError(
                f"data.path={str(path)!r} must be a folder for data.source=imagefolder"
            )
        return dict(datasets.load_dataset("imagefolder", data_dir=str(path), cache_dir=cache_dir))
    if source == "parquet":
        files = _parquet_files(path, train_split, test_split)
        return dict(datasets.load_dataset("parquet", data_files=files, cache_dir=cache_dir))
    raise ValueError(f"unknown local data.source {source!r}")


def _parquet_files(path: Path, train_split: str, test_split: str | None) -> dict[str, list[str]]:
    """Data files by split: a single file is the train split; in a folder (searched
    recursively, as the Hub lays files out under ``data/``) ``<train_split>*.parquet`` and
    ``<test_split>*.parquet``, or every ``*.parquet`` as train when no file is named so."""
    if path.is_file():
        return {train_split: [str(path)]}
    train = sorted(str(p) for p in path.rglob(f"{train_split}*.parquet"))
    test = sorted(str(p) for p in path.rglob(f"{test_split}*.parquet")) if test_split else []
    if not train:
        train = sorted(str(p) for p in path.rglob("*.parquet") if str(p) not in test)
    if not train:
        raise FileNotFoundError(f"no *.parquet files under data.path={str(path)!r}")
    return {train_split: train, **({test_split: test} if test and test_split else {})}
