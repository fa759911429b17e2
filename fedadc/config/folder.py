"""Where the Hydra ``conf/`` folder is, and the options of its config groups."""

from __future__ import annotations

import os
from pathlib import Path

CONF_DIR_ENV = "FEDADC_CONF_DIR"
"""Environment variable naming another ``conf`` folder (an installed copy, a test's)."""


def conf_dir() -> Path:
    """The ``conf`` folder: ``$FEDADC_CONF_DIR`` if set, else ``<repo root>/conf``."""
    env = os.environ.get(CONF_DIR_ENV)
    if env:
        path = Path(env).expanduser().resolve()
        if not path.is_dir():
            raise FileNotFoundError(f"{CONF_DIR_ENV}={env!r} is not a directory")
        return path
    path = Path(__file__).resolve().parents[2] / "conf"
    if not path.is_dir():
        raise FileNotFoundError(
            f"no Hydra config folder at {path} (fedadc installed without its conf/?); "
            f"set {CONF_DIR_ENV} to the project's conf/ directory"
        )
    return path


def group_options(group: str, directory: Path | None = None) -> list[str]:
    """The options of config group ``group``: its YAML files' names."""
    folder = (directory or conf_dir()) / group
    return sorted(p.stem for p in folder.glob("*.yaml"))
