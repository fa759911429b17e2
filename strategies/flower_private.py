"""The one module that touches private Flower internals (warm deployment runtime, flwr 1.41.0).

Three things cannot be done through Flower's public API (wait map:
``docs/deployment.md``, section "Warm runtime"):

* the SuperNode's hard-coded waits in ``flwr.supernode.start_client_internal``: the idle
  poll ``time.sleep(3)`` (a message waits up to 3 s before the node even sees it) and the two
  reply waits ``time.sleep(0.5)``. `install_supernode_patches` replaces that module's global
  ``time`` by a stand-in whose ``sleep`` shortens exactly these literals: the idle poll
  becomes ``active_poll_s`` while a message was seen in the last ``active_window_s``
  (Flower's 3 s otherwise, so an idle node loads the SuperLink as a stock one does);
* the first retry of an object pull (``pull_objects`` / ``pull_and_inflate_object_from_tree``
  keyword default ``initial_backoff = 1`` s), hit whenever a message is pulled before its
  objects were pushed, which a fast poll makes common. `install_fast_pull` sets it to 5 ms
  (SuperNode, ClientApp worker and ServerApp processes);
* the Runtime API client and Flower's own ``pull_task_input`` / ``push_message`` /
  ``push_task_output``, which the long-lived ClientApp worker calls (`runtime_api`).

Every entry point first checks the installed flwr version and the patched names, literals
and defaults, and refuses (`UnsupportedFlowerError`) on anything else, with the way back to
stock Flower in the message: a Flower upgrade fails loudly instead of silently changing
behaviour. Only the timing of messages changes, never their order or content.
"""

from __future__ import annotations

import inspect
import math
import time
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import flwr

TESTED_FLWR = "1.41.0"
STOCK_FALLBACK = (
    "To run stock Flower instead: start the device with `fedadc-supernode --stock` (or plain "
    "`flower-supernode`) and submit the run with `--run-config fast-deploy=false`."
)
IDLE_POLL_S = 3  # the literal of start_client_internal's idle poll (flwr 1.41.0)
REPLY_WAIT_S = 0.5  # the literal of its two waits for the ClientApp's reply
PULL_INITIAL_BACKOFF_S = 1  # flwr.supercore.constant.PULL_INITIAL_BACKOFF
DEFAULT_ACTIVE_POLL_S = 0.05
DEFAULT_REPLY_WAIT_S = 0.01
DEFAULT_ACTIVE_WINDOW_S = 30.0
FAST_PULL_BACKOFF_S = 0.005
_ORIGINAL = "_fedadc_original_initial_backoff"  # kept on the patched function itself


class UnsupportedFlowerError(RuntimeError):
    """The installed Flower is not the version (or shape) the private patches were made for."""


def _refuse(what: str, why: str) -> UnsupportedFlowerError:
    return UnsupportedFlowerError(
        f"{what} touches private internals of flwr {TESTED_FLWR} only: {why}. {STOCK_FALLBACK}"
    )


def check_flower_version(what: str = "fedadc's warm deployment runtime") -> None:
    """Refuse any flwr version other than the tested one."""
    version = getattr(flwr, "__version__", "unknown")
    if version != TESTED_FLWR:
        raise _refuse(what, f"installed is flwr {version}")


# ----------------------------------------------------------------------- (a) SuperNode waits
@dataclass
class SupernodeTiming:
    """The SuperNode's waits while the warm runtime is installed (seconds)."""

    active_poll_s: float = DEFAULT_ACTIVE_POLL_S
    reply_wait_s: float = DEFAULT_REPLY_WAIT_S
    active_window_s: float = DEFAULT_ACTIVE_WINDOW_S

    def __post_init__(self) -> None:
        if not 0 < self.active_poll_s <= IDLE_POLL_S:
            raise ValueError(f"active_poll_s must be in (0, {IDLE_POLL_S}]: {self.active_poll_s}")
        if not 0 < self.reply_wait_s <= REPLY_WAIT_S:
            raise ValueError(f"reply_wait_s must be in (0, {REPLY_WAIT_S}]: {self.reply_wait_s}")
        if self.active_window_s < 0:
            raise ValueError(f"active_window_s must be >= 0: {self.active_window_s}")


class AdaptiveTime:
    """Stands in for the module ``time`` inside ``flwr.supernode.start_client_internal``.

    ``sleep(3)`` (idle poll) and ``sleep(0.5)`` (reply waits) are shortened; every other call
    and attribute is the real ``time`` module's.
    """

    def __init__(self, timing: SupernodeTiming, clock: Callable[[], float] = time.monotonic):
        self.timing = timing
        self._clock = clock
        self.last_message = -math.inf

    def mark_active(self) -> None:
        self.last_message = self._clock()

    def idle_poll_s(self) -> float:
        active = self._clock() - self.last_message < self.timing.active_window_s
        return self.timing.active_poll_s if active else IDLE_POLL_S

    def sleep(self, seconds: float) -> None:
        if seconds == IDLE_POLL_S:
            seconds = self.idle_poll_s()
        elif seconds == REPLY_WAIT_S:
            seconds = self.timing.reply_wait_s
        time.sleep(seconds)

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


def _supernode_module() -> types.ModuleType:
    """``start_client_internal``'s module, after checking version, names and literals."""
    what = "fedadc-supernode's SuperNode patch"
    check_flower_version(what)
    from flwr.supernode import start_client_internal as sci

    source = inspect.getsource(sci)
    counts = {
        f"time.sleep({IDLE_POLL_S})": (source.count(f"time.sleep({IDLE_POLL_S})"), 1),
        f"time.sleep({REPLY_WAIT_S})": (source.count(f"time.sleep({REPLY_WAIT_S})"), 2),
        "time.sleep(": (source.count("time.sleep("), 3),
        "= _pull_and_store_message(": (source.count("= _pull_and_store_message("), 1),
    }
    wrong = [f"{k!r} x{n} (expected {want})" for k, (n, want) in counts.items() if n != want]
    if not callable(getattr(sci, "_pull_and_store_message", None)):
        wrong.append("_pull_and_store_message missing")
    if not (sci.time is time or isinstance(sci.time, AdaptiveTime)):
        wrong.append("its `time` global is not the time module")
    if wrong:
        raise _refuse(what, "start_client_internal differs: " + ", ".join(wrong))
    return sci


def install_supernode_patches(timing: SupernodeTiming | None = None) -> AdaptiveTime:
    """Shorten the SuperNode's idle poll (adaptively) and reply waits; also `install_fast_pull`.

    Call in the SuperNode's process before ``start_client_internal`` runs. Idempotent: a
    second call only updates the timing. Returns the stand-in (its ``last_message`` is the
    activity the adaptive poll follows).
    """
    timing = timing or SupernodeTiming()
    sci = _supernode_module()
    install_fast_pull()
    if isinstance(sci.time, AdaptiveTime):
        sci.time.timing = timing
        return sci.time
    shim = AdaptiveTime(timing)
    original = sci._pull_and_store_message

    def pull_and_store_message(*args: Any, **kwargs: Any) -> int | None:
        run_id = original(*args, **kwargs)
        if run_id is not None:
            shim.mark_active()
        return run_id

    pull_and_store_message.__wrapped__ = original  # type: ignore[attr-defined]
    sci.time = shim
    sci._pull_and_store_message = pull_and_store_message
    return shim


def uninstall_supernode_patches() -> None:
    """Restore Flower's SuperNode waits and object-pull backoff (tests, fallback)."""
    from flwr.supernode import start_client_internal as sci

    if isinstance(sci.time, AdaptiveTime):
        sci.time = time
        current = sci._pull_and_store_message
        sci._pull_and_store_message = getattr(current, "__wrapped__", current)
    uninstall_fast_pull()


# ----------------------------------------------------------------- (b) object-pull backoff
def _pull_functions() -> list[Callable[..., Any]]:
    what = "the fast object-pull retry"
    check_flower_version(what)
    from flwr.supercore.inflatable import inflatable_utils as iu

    fns = [iu.pull_objects, iu.pull_and_inflate_object_from_tree]
    for fn in fns:
        default = (fn.__kwdefaults__ or {}).get("initial_backoff")
        expected = getattr(fn, _ORIGINAL, default)
        if default is None or expected != PULL_INITIAL_BACKOFF_S:
            raise _refuse(what, f"{fn.__name__}(initial_backoff=...) default is {default!r}")
    return fns


def install_fast_pull(initial_backoff_s: float = FAST_PULL_BACKOFF_S) -> None:
    """First retry of a pull of a not-yet-pushed object after ``initial_backoff_s``, not 1 s.

    Later retries still double (capped by Flower at 10 s), so a really missing object costs
    about the same number of requests as before plus a few.
    """
    if not 0 < initial_backoff_s <= PULL_INITIAL_BACKOFF_S:
        raise ValueError(f"initial_backoff_s must be in (0, 1]: {initial_backoff_s}")
    for fn in _pull_functions():
        if not hasattr(fn, _ORIGINAL):
            setattr(fn, _ORIGINAL, fn.__kwdefaults__["initial_backoff"])
        fn.__kwdefaults__["initial_backoff"] = initial_backoff_s


def uninstall_fast_pull() -> None:
    from flwr.supercore.inflatable import inflatable_utils as iu

    for fn in (iu.pull_objects, iu.pull_and_inflate_object_from_tree):
        if hasattr(fn, _ORIGINAL):
            fn.__kwdefaults__["initial_backoff"] = getattr(fn, _ORIGINAL)
            delattr(fn, _ORIGINAL)


def fast_pull_backoff_s() -> float:
    """The current first-retry wait of ``pull_objects`` (Flower's 1 s unless patched)."""
    from flwr.supercore.inflatable.inflatable_utils import pull_objects

    return float(pull_objects.__kwdefaults__["initial_backoff"])


# ------------------------------------------------------------ (c) the Runtime API, as a worker
@dataclass(frozen=True)
class RuntimeApi:
    """Flower's own pieces a long-lived ClientApp worker needs (those ``flwr-clientapp`` and
    ``flower-superexec`` use), looked up once after the version check."""

    connect: Callable[[str, str | None], Any]  # (address, task token or None) -> client
    acquire_client_task: Callable[[Any], str | None]  # client -> token of a ClientApp task
    pull_task_input: Callable[[Any], tuple[Any, Any, Any, Any]]  # -> message, context, run, fab
    push_message: Callable[[Any, Any, Any], None]
    push_task_output: Callable[[Any, Any, str, str], None]
    start_heartbeat: Callable[[Any], Any]  # client -> sender with .stop()
    install_fab: Callable[[bytes], Any]
    project_dir: Callable[[str, str, str], Any]  # (fab_id, fab_version, fab_hash) -> Path
    load_client_app: Callable[[str, str, str], Any]
    error_reply: Callable[[Any, BaseException], Any]  # (message, exception) -> error reply
    completed: str
    failed: str


def runtime_api() -> RuntimeApi:
    """The Runtime API pieces of flwr 1.41.0 (refuses other versions)."""
    what = "fedadc-supernode's ClientApp worker"
    check_flower_version(what)
    try:
        from flwr.app import Error, Message
        from flwr.cli.install import install_from_fab
        from flwr.clientapp.client_app import LoadClientAppError
        from flwr.clientapp.utils import get_load_client_app_fn
        from flwr.common.config import get_project_dir
        from flwr.common.constant import ErrorCode, SubStatus
        from flwr.proto.runtime_pb2 import AcquireTaskRequest
        from flwr.supercore.constant import TaskType
        from flwr.supercore.heartbeat import HeartbeatSender, make_task_heartbeat_fn_http
        from flwr.supercore.interceptors import (
            RuntimeTokenHttpInterceptor,
            RuntimeVersionHttpInterceptor,
        )
        from flwr.supercore.retry import make_simple_http_retry_invoker
        from flwr.supercore.runtime import RuntimeHttpClient
        from flwr.supernode.runtime import run_clientapp as rc
    except ImportError as ex:
        raise _refuse(what, str(ex)) from ex

    def connect(address: str, token: str | None) -> Any:
        name = "SuperExec" if token is None else "flwr-clientapp"
        interceptors: list[Any] = [RuntimeVersionHttpInterceptor(component_name=name)]
        if token is not None:
            interceptors.append(RuntimeTokenHttpInterceptor(token))
        return RuntimeHttpClient.from_server_address(
            server_address=address,
            insecure=True,
            root_certificates=None,
            interceptors=interceptors,
            retry_invoker=make_simple_http_retry_invoker(),
        )

    def acquire_client_task(client: Any) -> str | None:
        res = client.AcquireTask(AcquireTaskRequest(supported_task_types=[TaskType.CLIENT_APP]))
        return res.token if res.HasField("task") and res.token else None

    def start_heartbeat(client: Any) -> Any:
        sender = HeartbeatSender(make_task_heartbeat_fn_http(client))
        sender.start()
        return sender

    def error_reply(message: Any, ex: BaseException) -> Any:
        # the reply flwr-clientapp sends when the app raises (run_clientapp.py)
        if isinstance(ex, LoadClientAppError):
            code, reason = ErrorCode.LOAD_CLIENT_APP_EXCEPTION, "An exception was raised when "
            reason += "attempting to load `ClientApp`"
        else:
            code, reason = ErrorCode.CLIENT_APP_RAISED_EXCEPTION, f"{type(ex)}:<'{ex}'>"
        return Message(Error(code=code, reason=reason), reply_to=message)

    return RuntimeApi(
        connect=connect,
        acquire_client_task=acquire_client_task,
        pull_task_input=rc.pull_task_input,
        push_message=rc.push_message,
        push_task_output=rc.push_task_output,
        start_heartbeat=start_heartbeat,
        install_fab=lambda content: install_from_fab(content, skip_prompt=True),
        project_dir=get_project_dir,
        load_client_app=get_load_client_app_fn(default_app_ref="", app_path=None, multi_app=True),
        error_reply=error_reply,
        completed=SubStatus.COMPLETED,
        failed=SubStatus.FAILED,
    )
