"""Small pieces the warm runtime's processes share."""

from __future__ import annotations

import logging
import os
import sys
import threading
import time

LOG_FORMAT = "%(asctime)s fedadc-supernode[%(process)d] %(levelname)s: %(message)s"

WARM_WORKER_ENV = "FEDADC_WARM_WORKER"
"""Set to "1" by the worker before it loads an app: this process serves every message of its
node, so the app may keep a round's state in memory (an environment variable, not a module
flag: a new FAB re-imports the app's modules)."""


def setup_logging() -> logging.Logger:
    """The warm runtime's own logger (not the root one: httpx and flwr keep their levels)."""
    logger = logging.getLogger("fedadc.warm")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger


def exit_with_parent(parent_pid: int | None, interval_s: float = 1.0) -> None:
    """End this process when ``parent_pid`` is gone (the launcher was SIGKILLed).

    The launcher stops its children on every normal exit; this covers the one it cannot see.
    """
    if parent_pid is None:
        return

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(interval_s)
        os._exit(3)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()
