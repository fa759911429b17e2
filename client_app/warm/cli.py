"""``fedadc-supernode``: a Flower SuperNode whose ClientApp stays warm for the run.

    fedadc-supernode [--stock] [--poll-s S] [--worker-poll-s S] FLOWER_SUPERNODE_ARGS...

Takes ``flower-supernode``'s own arguments (``--superlink``, ``--insecure`` or
``--root-certificates``, ``--auth-supernode-private-key``, ``--node-config``, ``--port`` of the
Runtime API, ...). By default (flwr 1.41.0 only) it runs the warm runtime: Flower's SuperNode
with ``--isolation process`` and shortened waits, plus one long-lived ClientApp worker on the
Runtime API at 127.0.0.1. ``--stock`` runs plain ``flower-supernode`` with those arguments.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys

from client_app.warm.common import setup_logging
from client_app.warm.launcher import RUNTIME_HOST, WarmLauncher
from client_app.warm.worker import DEFAULT_POLL_S
from strategies import flower_private
from strategies.launcher import free_ports

# flower-supernode options the warm runtime sets itself or cannot serve (the worker speaks
# plain HTTP to 127.0.0.1, as Flower's subprocess mode does)
_OWNED = ("--isolation", "--host")
_UNSUPPORTED = (
    "--ssl-certfile",
    "--ssl-keyfile",
    "--ssl-ca-certfile",
    "--appio-ssl-certfile",
    "--appio-ssl-keyfile",
    "--appio-ssl-ca-certfile",
    "--superexec-auth-secret-file",
)


def parse(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        prog="fedadc-supernode", description=__doc__.split("\n\n")[0], allow_abbrev=False
    )
    parser.add_argument("--stock", action="store_true", help="plain flower-supernode, no patch")
    parser.add_argument(
        "--poll-s",
        type=float,
        default=flower_private.DEFAULT_ACTIVE_POLL_S,
        help="SuperNode poll of the SuperLink while active (Flower: 3 s)",
    )
    parser.add_argument(
        "--reply-wait-s",
        type=float,
        default=flower_private.DEFAULT_REPLY_WAIT_S,
        help="SuperNode wait for the ClientApp's reply (Flower: 0.5 s)",
    )
    parser.add_argument(
        "--active-window-s",
        type=float,
        default=flower_private.DEFAULT_ACTIVE_WINDOW_S,
        help="back to Flower's 3 s poll after this long without a message",
    )
    parser.add_argument(
        "--worker-poll-s",
        type=float,
        default=DEFAULT_POLL_S,
        help="worker's poll of the local Runtime API for tasks while active",
    )
    parser.add_argument("--port", type=int, default=None, help="Runtime API port (default: free)")
    return parser.parse_known_args(argv)


def main(argv: list[str] | None = None) -> None:
    log = setup_logging()
    args, flower_args = parse(argv)
    if args.stock:
        if args.port is not None:
            flower_args += ["--port", str(args.port)]
        log.info(
            "mode: stock Flower (--stock): plain flower-supernode, no patch, one "
            "ClientApp process per message"
        )
        exe = shutil.which("flower-supernode") or "flower-supernode"
        os.execv(exe, [exe, *flower_args])
        return  # not reached (exec), except where execv is replaced (tests)
    given = sorted({a.split("=")[0] for a in flower_args} & {*_OWNED, *_UNSUPPORTED})
    if given:
        sys.exit(
            f"fedadc-supernode: {', '.join(given)} not available with the warm runtime "
            f"(it runs --isolation process on {RUNTIME_HOST}); use --stock"
        )
    try:
        flower_private.check_flower_version()
        flower_private.SupernodeTiming(args.poll_s, args.reply_wait_s, args.active_window_s)
    except (flower_private.UnsupportedFlowerError, ValueError) as err:
        sys.exit(f"fedadc-supernode: {err}")
    port = args.port or free_ports(1)[0]
    log.info(
        "mode: warm runtime (default; flwr %s, the tested version): SuperNode polls every "
        "%.3f s while active (Flower's 3 s after %.0f s idle), replies after %.3f s, one "
        "long-lived ClientApp worker on %s:%d; --stock for plain Flower",
        flower_private.TESTED_FLWR,
        args.poll_s,
        args.active_window_s,
        args.reply_wait_s,
        RUNTIME_HOST,
        port,
    )
    launcher = WarmLauncher(
        flower_args=flower_args,
        port=port,
        supernode_opts=[
            f"--active-poll-s={args.poll_s}",
            f"--reply-wait-s={args.reply_wait_s}",
            f"--active-window-s={args.active_window_s}",
        ],
        worker_opts=[f"--poll-s={args.worker_poll_s}"],
    )
    sys.exit(launcher.run())


if __name__ == "__main__":
    main()
