"""Flower's own ``flower-supernode`` entry point, run after `install_supernode_patches`.

    python -m client_app.warm.supernode [--active-poll-s S] [--reply-wait-s S]
        [--active-window-s S] [--parent-pid PID] FLOWER_SUPERNODE_ARGS...

Every argument this module does not know is Flower's (``--superlink``, ``--insecure`` /
``--root-certificates``, ``--auth-supernode-private-key``, ``--node-config``, ``--port``, ...).
"""

from __future__ import annotations

import argparse
import sys

from client_app.warm.common import exit_with_parent, setup_logging
from strategies import flower_private


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--active-poll-s", type=float, default=flower_private.DEFAULT_ACTIVE_POLL_S)
    parser.add_argument("--reply-wait-s", type=float, default=flower_private.DEFAULT_REPLY_WAIT_S)
    parser.add_argument(
        "--active-window-s", type=float, default=flower_private.DEFAULT_ACTIVE_WINDOW_S
    )
    parser.add_argument("--parent-pid", type=int, default=None)
    args, flower_args = parser.parse_known_args(argv)
    log = setup_logging()
    timing = flower_private.SupernodeTiming(
        args.active_poll_s, args.reply_wait_s, args.active_window_s
    )
    try:
        flower_private.install_supernode_patches(timing)
    except flower_private.UnsupportedFlowerError as err:
        log.error("%s", err)
        raise SystemExit(2) from None
    exit_with_parent(args.parent_pid)
    from flwr.supernode.cli import flower_supernode

    sys.argv = ["flower-supernode", *flower_args]
    flower_supernode()


if __name__ == "__main__":
    main()
