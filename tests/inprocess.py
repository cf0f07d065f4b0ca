"""A Grid that delivers every message to a ClientApp in this process, for tests.

The ServerApp logic (:func:`flowerbed.server.app.run_server`) runs unchanged on it;
each node is one partition with its own ``Context`` (its ``state`` persists across
rounds, as a SuperNode's does). No Ray, no gRPC: a short run of any strategy takes
seconds, so tests can compare many of them metric by metric.
"""

from __future__ import annotations

from collections.abc import Iterable

from flwr.app import Context, Error, Message, RecordDict
from flwr.common.constant import ErrorCode
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid
from flwr.supercore.task_identity import TaskIdentity

NODE_ID_BASE = 1000


class InProcessGrid(Grid):
    """``num_nodes`` nodes, node ``node_id_base + i`` holding partition ``i``."""

    def __init__(self, client_app: ClientApp, num_nodes: int, run_config: dict | None = None,
                 node_id_base: int = NODE_ID_BASE, errors_as_replies: bool = False) -> None:
        self.client_app = client_app
        # What a SuperLink-run ServerApp process has set before it creates messages.
        TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
        self.contexts = {
            node_id_base + i: Context(run_id=1, node_id=node_id_base + i,
                                      node_config={"partition-id": i, "num-partitions": num_nodes},
                                      state=RecordDict(), run_config=dict(run_config or {}))
            for i in range(num_nodes)
        }
        self.delivered: list[Message] = []  # every message sent, for tests that inspect them
        self.errors_as_replies = errors_as_replies  # else a ClientApp's exception propagates (tests see it)
        self.apps: dict[int, ClientApp] = {}  # nodes that run another app than client_app
        self.num_partitions = num_nodes
        self.run_config = dict(run_config or {})

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        replies = []
        for message in messages:
            self.delivered.append(message)
            node = message.metadata.dst_node_id
            if node not in self.contexts:  # a node that left answers nothing
                continue
            try:
                replies.append(self.apps.get(node, self.client_app)(message, self.contexts[node]))
            except Exception as err:  # as Flower's engines do: an error reply, the round goes on
                if not self.errors_as_replies:
                    raise
                replies.append(Message(Error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION, f"{type(err).__name__}: {err}"),
                                       reply_to=message))
        return replies

    def join(self, node_id: int, partition_id: int, app: ClientApp | None = None) -> None:
        """A node joins, holding ``partition_id`` (fresh state: a restarted SuperNode)."""
        num_nodes = self.num_partitions
        self.contexts[node_id] = Context(run_id=1, node_id=node_id,
                                         node_config={"partition-id": partition_id, "num-partitions": num_nodes},
                                         state=RecordDict(), run_config=dict(self.run_config))
        if app is not None:
            self.apps[node_id] = app

    def leave(self, node_id: int) -> None:
        """A node goes away (killed): it answers nothing more and is no longer listed."""
        del self.contexts[node_id]

    def get_node_ids(self) -> Iterable[int]:
        return list(self.contexts)

    # Unused by flowerbed's server: send_and_receive is the only path.
    def set_run(self, run):  # type: ignore[no-untyped-def]
        raise NotImplementedError

    @property
    def run(self):  # type: ignore[no-untyped-def]
        raise NotImplementedError

    def create_message(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        raise NotImplementedError

    def push_messages(self, messages):  # type: ignore[no-untyped-def]
        raise NotImplementedError

    def pull_messages(self, message_ids):  # type: ignore[no-untyped-def]
        raise NotImplementedError


def run_in_process(scenario, progress=None):
    """Run ``scenario`` through the real ServerApp logic and ClientApp, in this process."""
    from flowerbed.client.app import build_client_app
    from flowerbed.server.app import run_server

    grid = InProcessGrid(build_client_app(scenario), scenario.partition.num_clients)
    return run_server(grid, scenario, progress=progress), grid
