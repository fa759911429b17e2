"""Splits of a Hugging Face hub data set, failing fast and helpfully when the hub is out
of reach (offline mode, no network, no such repo)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from datasets import Dataset

_TRUE = {"1", "ON", "YES", "TRUE"}


class HubUnavailableError(RuntimeError):
    """A hub data set could not be loaded (no network, offline mode, unknown repo)."""


@contextmanager
def _offline_from_env() -> Iterator[None]:
    """``datasets`` and ``huggingface_hub`` read HF_HUB_OFFLINE once, at import; honour its
    value now, so setting it later (a test, a launcher) still makes hub access fail fast."""
    flags = (os.environ.get("HF_HUB_OFFLINE", ""), os.environ.get("HF_DATASETS_OFFLINE", ""))
    if not any(flag.upper() in _TRUE for flag in flags):
        yield
        return
    import datasets.config
    import huggingface_hub.constants

    saved = (datasets.config.HF_HUB_OFFLINE, huggingface_hub.constants.HF_HUB_OFFLINE)
    datasets.config.HF_HUB_OFFLINE = huggingface_hub.constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, huggingface_hub.constants.HF_HUB_OFFLINE = saved


def _hub_errors() -> tuple[type[BaseException], ...]:
    """Exceptions meaning "the hub (or this repo on it) is not reachable"."""
    errors: tuple[type[BaseException], ...] = (OSError, ConnectionError, TimeoutError)
    try:
        import httpx

        errors += (httpx.HTTPError,)
    except ImportError:  # pragma: no cover - httpx comes with huggingface_hub
        pass
    try:
        import requests

        errors += (requests.RequestException,)
    except ImportError:  # pragma: no cover
        pass
    return errors


def load_hub_splits(name: str, cache_dir: str | None) -> dict[str, Dataset]:
    """All splits of hub data set ``name``; unreachable -> :class:`HubUnavailableError`."""
    import datasets

    try:
        with _offline_from_env():
            return dict(datasets.load_dataset(name, cache_dir=cache_dir))
    except _hub_errors() as exc:
        offline = bool(datasets.config.HF_HUB_OFFLINE) or any(
            os.environ.get(k, "").upper() in _TRUE
            for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
        )
        why = (
            "offline mode is on (HF_HUB_OFFLINE)" if offline else "no network, or no such data set"
        )
        raise HubUnavailableError(
            f"Could not load data set {name!r} from the Hugging Face hub: the hub could not be "
            f"reached or does not have it ({why}; {type(exc).__name__}: {exc}). Use a local "
            "copy instead: data.source=disk|imagefolder|parquet with data.path=... . To make "
            f"one where the hub is reachable: datasets.load_dataset({name!r}).save_to_disk(PATH)"
            ", then data.source=disk data.path=PATH."
        ) from exc
