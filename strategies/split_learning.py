"""The Flower strategy of fedadc: nodes, messages and failures; fedadc does the rest.

``SplitLearningStrategy.start`` is a template in phases: wait for the nodes, map
partition ids to node ids, then run fedadc's run lifecycle
(``fedadc.federated.lifecycle.run_federated``: resume, round loop, checkpoints, summary)
with this strategy as its transport. The lifecycle and round loop (sampling, the per-step
exchange, head aggregation, evaluation, budget) are the same code the in-process reference
runs, so the Flower run equals the reference for the same seed.
"""

from __future__ import annotations

import time
from logging import INFO, WARNING

from flwr.app import ConfigRecord, Message, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid

from fedadc.config.schema import RunConfig
from fedadc.federated.lifecycle import run_federated
from fedadc.federated.results import RunDirectory
from fedadc.federated.rounds import RoundsResult
from fedadc.wire.messages import FromClient, ToClient
from strategies.codec import decode_from_client, encode_to_client
from strategies.grid_exchange import DEFAULT_POLL_S, push_pull

STEP = "train.step"
INFO_QUERY = "query.info"


class SplitLearningStrategy:
    """Federated split learning over a Flower ``Grid``.

    Args:
        run: the typed run configuration.
        results: where metrics, checkpoints and the summary go (None: nowhere).
        node_wait_s: how long to wait for ``federation.num_clients`` nodes to connect.
        poll_s: seconds between pulls of the replies of an exchange; None: the grid's own
            interval where it has one (simulation: Flower's 0.1 s, 2 ms with fast-sim),
            else ``DEFAULT_POLL_S`` (deployment, where ``send_and_receive`` would sleep 3 s).
    """

    def __init__(
        self,
        run: RunConfig,
        results: RunDirectory | None = None,
        node_wait_s: float = 120.0,
        poll_s: float | None = None,
    ) -> None:
        self.run = run
        self.results = results
        self.node_wait_s = node_wait_s
        self.poll_s = poll_s
        self.grid: Grid | None = None
        self.nodes: dict[int, int] = {}  # partition id -> node id

    # ================================================================ template
    def start(self, grid: Grid, resume: bool = False) -> RoundsResult:
        self.grid = grid
        # --- wait for the federation -------------------------------------------
        node_ids = self._wait_for_nodes()
        # --- map partitions to nodes ---------------------------------------------
        self.nodes = self._map_partitions(node_ids)
        # --- run fedadc's run lifecycle with this strategy as transport ----------
        return run_federated(self.run, self, results=self.results, resume=resume)

    # ================================================================ transport
    def exchange(self, messages: dict[int, ToClient]) -> dict[int, FromClient]:
        """Send one message per partition, return the replies that came back in time."""
        assert self.grid is not None
        out = [
            Message(content=encode_to_client(msg), dst_node_id=self.nodes[pid], message_type=STEP)
            for pid, msg in messages.items()
        ]
        replies = self._push_pull(out)
        by_node = {node: pid for pid, node in self.nodes.items()}
        result: dict[int, FromClient] = {}
        for reply in replies:
            pid = by_node.get(reply.metadata.src_node_id)
            if pid is None or pid not in messages:
                log(WARNING, "ignoring a reply from node %s", reply.metadata.src_node_id)
                continue
            if reply.has_error():
                log(WARNING, "client %s failed: %s", pid, reply.error.reason)
                continue
            try:
                decoded = decode_from_client(reply.content)
            except Exception as err:  # a malformed record: the client is dropped, run goes on
                log(WARNING, "client %s: payload rejected: malformed message (%r)", pid, err)
                continue
            # keyed by the node's partition; the server rejects a reply claiming another one
            result[pid] = decoded
        silent = sorted(set(messages) - {by_node.get(r.metadata.src_node_id) for r in replies})
        if silent:
            log(
                WARNING,
                "no reply within federation.timeout_s=%s from clients %s",
                self.run.federation.timeout_s,
                silent,
            )
        return dict(sorted(result.items()))  # arrival order must not matter

    def _push_pull(self, out: list[Message]) -> list[Message]:
        assert self.grid is not None
        poll_s = self.poll_s
        if poll_s is None:
            poll_s = getattr(self.grid, "pull_interval", DEFAULT_POLL_S)
        return push_pull(self.grid, out, timeout_s=self.run.federation.timeout_s, poll_s=poll_s)

    # ================================================================ nodes
    def _wait_for_nodes(self) -> list[int]:
        assert self.grid is not None
        want = self.run.federation.num_clients
        deadline = time.monotonic() + self.node_wait_s
        next_log = time.monotonic() + 5.0
        while True:
            node_ids = list(self.grid.get_node_ids())
            if len(node_ids) >= want:
                return node_ids
            if time.monotonic() > next_log:
                log(
                    WARNING,
                    "waiting for %d nodes (federation.num_clients), %d connected; in "
                    "simulation pass --federation-config 'num-supernodes=%d'",
                    want,
                    len(node_ids),
                    want,
                )
                next_log += 10.0
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"only {len(node_ids)} of federation.num_clients={want} nodes connected "
                    f"within {self.node_wait_s:.0f} s; start more SuperNodes or lower "
                    "num-clients (in simulation: --federation-config 'num-supernodes=N')"
                )
            time.sleep(0.5)

    def _map_partitions(self, node_ids: list[int]) -> dict[int, int]:
        """Ask each node for its partition id (node ids are random, partitions are not)."""
        assert self.grid is not None
        out = [
            Message(
                content=RecordDict({"q": ConfigRecord({})}), dst_node_id=n, message_type=INFO_QUERY
            )
            for n in node_ids
        ]
        nodes: dict[int, int] = {}
        for reply in self._push_pull(out):
            if reply.has_error():
                raise RuntimeError(
                    f"node {reply.metadata.src_node_id} failed: {reply.error.reason}"
                )
            info = reply.content.config_records["info"]
            pid = int(info["partition-id"])
            if pid in nodes:
                raise RuntimeError(f"two nodes claim partition-id {pid}; give each a unique one")
            nodes[pid] = reply.metadata.src_node_id
            hist = info.get("label-histogram")  # not sent in U-shape
            log(
                INFO,
                "client %d (node %d): %s samples%s",
                pid,
                nodes[pid],
                info["num-examples"],
                f", labels {hist}" if hist is not None else "",
            )
        missing = sorted(set(range(self.run.federation.num_clients)) - set(nodes))
        if missing:
            raise RuntimeError(
                f"no node holds partition ids {missing}; node configs must cover "
                f"0..{self.run.federation.num_clients - 1} (partition-id / num-partitions)"
            )
        return nodes
