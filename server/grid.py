"""A Grid that knows which partition each node holds, and meters the traffic.

Flower's strategies sample ``random.sample(grid.get_node_ids(), k)`` and aggregate
replies in arrival order. Node ids are random per run and replies arrive in any
order, so neither is reproducible. :class:`RosterGrid` wraps the real Grid:

* a roster (one ``query`` message to every node) maps node id -> partition id;
* ``get_node_ids`` lists nodes in partition order, so a seeded ``random`` samples the
  same partitions every run;
* ``send_and_receive`` returns replies in partition order and records, per round,
  the bytes sent and received, the failed replies and each client's metrics;
* each reply is checked against the message it answers (:mod:`~flowerbed.server.replies`):
  a bad one reaches the strategy as an error reply, counted as rejected with its reason.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from flwr.app import Message, MessageType, RecordDict
from flwr.serverapp import Grid

from flowerbed.server.replies import REJECTED_CODE, odd_names, rejected_reply, reply_problem


LOG = logging.getLogger("flowerbed")


def one_line(reason: str, limit: int = 300) -> str:
    """The exception line of a failed reply's reason (Flower puts the whole traceback in it)."""
    lines = [line.strip() for line in reason.removesuffix("'>").splitlines() if line.strip()]
    last = lines[-1] if lines else "no reason given"
    return last.removeprefix("Exception ClientAppException occurred. Message: ")[:limit]


def content_bytes(content: RecordDict) -> int:
    """Serialized size of a message's records (arrays, metrics, configs)."""
    return sum(record.count_bytes() for record in content.values())


@dataclass
class Traffic:
    """What went over the grid since the last :meth:`RosterGrid.take_traffic`."""

    bytes_sent: int = 0
    bytes_received: int = 0
    ok: dict[str, int] = field(default_factory=dict)
    failed: dict[str, int] = field(default_factory=dict)
    # message type -> partition id (or node id if unknown) -> why its reply was rejected
    rejected: dict[str, dict[int, str]] = field(default_factory=dict)
    # message type -> partition id -> that client's reply metrics
    metrics: dict[str, dict[int, dict[str, float]]] = field(default_factory=dict)


class RosterGrid(Grid):
    """Delegates to ``grid``; see the module docstring for what it adds."""

    def __init__(self, grid: Grid, max_reply_bytes: int = 1 << 62) -> None:
        self._grid = grid
        self.max_reply_bytes = max_reply_bytes
        self.last_sent = 0  # messages in the last send_and_receive
        self.partition_of: dict[int, int] = {}
        self.num_examples: dict[int, int] = {}
        self._traffic = Traffic()

    # --- the roster ----------------------------------------------------------------

    def build_roster(self, num_nodes: int, timeout: float = 3600.0, poll: float = 0.5) -> None:
        """Wait for ``num_nodes`` nodes, then ask each which partition it holds."""
        deadline = time.monotonic() + timeout
        while len(node_ids := list(self._grid.get_node_ids())) < num_nodes:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {len(node_ids)} of {num_nodes} nodes connected")
            time.sleep(poll)
        queries = [Message(RecordDict(), dst_node_id=node, message_type=MessageType.QUERY)
                   for node in node_ids]
        replies = list(self._grid.send_and_receive(queries, timeout=timeout))
        for reply in replies:
            if reply.has_error():
                raise RuntimeError(
                    f"node {reply.metadata.src_node_id} failed the roster query: {reply.error.reason}"
                )
            metrics = reply.content["metrics"]
            self.partition_of[reply.metadata.src_node_id] = int(metrics["partition-id"])
            self.num_examples[reply.metadata.src_node_id] = int(metrics["num-examples"])
        held = sorted(self.partition_of.values())
        if len(set(held)) != len(held):
            raise RuntimeError(f"two nodes hold the same partition: {held}")

    def _order(self, node_id: int) -> tuple[int, int]:
        return (self.partition_of.get(node_id, 1 << 62), node_id)

    # --- metering ------------------------------------------------------------------

    def take_traffic(self) -> Traffic:
        """Return the traffic recorded so far and start a new tally."""
        traffic, self._traffic = self._traffic, Traffic()
        return traffic

    def _checked(self, reply: Message, sent: dict[int, Message]) -> Message:
        """``reply``, or the error reply that stands for it if it fails the checks."""
        question = sent.get(reply.metadata.src_node_id)
        if reply.has_error() or question is None:
            return reply
        problem = reply_problem(question, reply, self.max_reply_bytes)
        return reply if problem is None else self._reject(reply, sent, problem)

    def _reject(self, reply: Message, sent: dict[int, Message], problem: str) -> Message:
        node = reply.metadata.src_node_id
        self._traffic.rejected.setdefault(reply.metadata.message_type, {})[self.partition_of.get(node, node)] = problem
        return rejected_reply(sent[node], problem)

    def _record_reply(self, reply: Message) -> None:
        kind = reply.metadata.message_type
        tally = self._traffic
        if reply.has_error():
            node = reply.metadata.src_node_id
            who = f"client {self.partition_of.get(node, f'on node {node}')}"
            if reply.error.code == REJECTED_CODE:  # counted as rejected, not failed
                LOG.warning("%s: %s reply %s", who, kind, one_line(reply.error.reason or ""))
                return
            LOG.warning("%s failed (%s): %s", who, kind, one_line(reply.error.reason or ""))
            tally.failed[kind] = tally.failed.get(kind, 0) + 1
            return
        tally.ok[kind] = tally.ok.get(kind, 0) + 1
        tally.bytes_received += content_bytes(reply.content)
        partition = self.partition_of.get(reply.metadata.src_node_id)
        if partition is not None:
            merged: dict[str, float] = {}
            for record in reply.content.metric_records.values():
                merged.update({k: v for k, v in record.items() if isinstance(v, (int, float))})
            tally.metrics.setdefault(kind, {})[partition] = merged

    # --- Grid ----------------------------------------------------------------------

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        messages = list(messages)
        self.last_sent = len(messages)
        self._traffic.bytes_sent += sum(content_bytes(m.content) for m in messages)
        sent = {m.metadata.dst_node_id: m for m in messages}
        replies = sorted((self._checked(r, sent) for r in self._grid.send_and_receive(messages, timeout=timeout)),
                         key=lambda r: self._order(r.metadata.src_node_id))
        usable = [i for i, r in enumerate(replies) if not r.has_error() and r.metadata.src_node_id in sent]
        for index, problem in odd_names([replies[i] for i in usable]).items():
            replies[usable[index]] = self._reject(replies[usable[index]], sent, problem)
        for reply in replies:
            self._record_reply(reply)
        return replies

    def get_node_ids(self) -> Iterable[int]:
        return sorted(self._grid.get_node_ids(), key=self._order)

    def set_run(self, run):  # type: ignore[no-untyped-def]
        self._grid.set_run(run)

    @property
    def run(self):  # type: ignore[no-untyped-def]
        return self._grid.run

    def create_message(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        return self._grid.create_message(*args, **kwargs)

    def get_nodes(self):  # type: ignore[no-untyped-def]
        return self._grid.get_nodes()

    def push_messages(self, messages):  # type: ignore[no-untyped-def]
        return self._grid.push_messages(messages)

    def pull_messages(self, message_ids):  # type: ignore[no-untyped-def]
        return self._grid.pull_messages(message_ids)
