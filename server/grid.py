"""A Grid that knows which partition each node holds, and meters the traffic.

Flower's strategies sample ``random.sample(grid.get_node_ids(), k)`` and aggregate
replies in arrival order. Node ids are random per run and replies arrive in any
order, so neither is reproducible. :class:`RosterGrid` wraps the real Grid:

* a roster (one ``query`` message to every node) maps node id -> partition id; it is
  brought up to date whenever the strategy lists the nodes: a node seen for the first
  time is queried (a SuperNode restarted under a new id gets its partition back), a
  node that left drops out, and a second node claiming a held partition is refused;
* ``get_node_ids`` lists nodes in partition order, so a seeded ``random`` samples the
  same partitions every run, and ends the run when fewer than a round needs stay
  connected for longer than the wait allows (Flower's strategies wait forever);
* a node that answers no roster query (a ClientApp written like Flower's examples,
  without flowerbed's ``query`` handler) still trains and evaluates: its metrics are
  kept under its node id;
* ``send_and_receive`` returns replies in partition order and records, per round,
  the bytes sent and received, the failed replies and each client's metrics;
* each reply is checked against the message it answers (:mod:`~flowerbed.server.replies`):
  a bad one reaches the strategy as an error reply, counted as rejected with its reason.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from flwr.app import Message, MessageType, RecordDict
from flwr.serverapp import Grid

from flowerbed.server.contract import with_flowerbed_names
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


FIRST_PULL_S, MAX_PULL_S = 0.02, 0.25  # reply polling over gRPC (see RosterGrid._exchange)


def over_http(grid: Grid) -> bool:
    """Whether ``grid`` is Flower's deployment grid (a ServerApp run by a SuperLink). Then
    also: a reply is listed as soon as its header has arrived, and pulling its objects
    before they have waits 1 s, then 2 s (``PULL_INITIAL_BACKOFF``): retry after 10 ms."""
    if os.environ.get("FLOWERBED_FLOWER_POLLING") == "1":  # Flower's own loop (bench/grpc_round.py)
        return False
    try:
        from flwr.superlink.grid import http_grid
    except ImportError:
        return False
    if not isinstance(grid, http_grid.HttpGrid):
        return False
    if not isinstance(http_grid.pull_objects, functools.partial):
        http_grid.pull_objects = functools.partial(http_grid.pull_objects, initial_backoff=0.01, backoff_cap=0.5)
    return True


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


@runtime_checkable
class KnowsPartitions(Protocol):
    """A grid that made its nodes itself (flowerbed's simulation engine) knows which
    partition each holds: the roster needs no query round."""

    def partitions(self) -> dict[int, tuple[int, int]]:
        """node id -> (partition id, training examples)"""


class NodesMissing(RuntimeError):
    """Fewer nodes than a round needs stayed connected for longer than the wait allows."""


class RosterGrid(Grid):
    """Delegates to ``grid``; see the module docstring for what it adds."""

    def __init__(self, grid: Grid, max_reply_bytes: int = 1 << 62, needed: int = 0,
                 wait_s: float = float("inf"), query_timeout: float = 3600.0) -> None:
        self._grid = grid
        self.max_reply_bytes = max_reply_bytes
        self.last_sent = 0  # messages in the last send_and_receive
        # The roster: the live nodes that hold a partition, one each.
        self.partition_of: dict[int, int] = {}
        self.num_examples: dict[int, int] = {}
        # What every node that answered the roster query claimed, in the order they
        # answered (the first live claimant of a partition holds it), and the nodes that
        # answered no roster query (a stock Flower ClientApp has no `query` handler).
        self.claims: dict[int, tuple[int, int]] = {}
        self.unrostered: set[int] = set()
        self.needed = needed  # connected clients a round waits for
        self.wait_s = wait_s  # ... for at most this long in a row
        self.query_timeout = query_timeout
        self._short_since: float | None = None
        self._refused: set[int] = set()  # live nodes claiming a held partition
        self._gone: set[int] = set()  # partitions whose node left
        self._traffic = Traffic()
        self._polls_slowly = over_http(grid)
        self._last_live: list[int] | None = None
        self._last_order: list[int] = []

    # --- the roster ----------------------------------------------------------------

    def build_roster(self, num_nodes: int, poll: float = 0.5) -> None:
        """Wait for ``num_nodes`` nodes (for ``wait_s`` at most; then at least ``needed``
        must be there), then ask each which partition it holds."""
        deadline = time.monotonic() + self.wait_s
        while len(node_ids := list(self._grid.get_node_ids())) < num_nodes:
            if time.monotonic() > deadline:
                if len(node_ids) >= self.needed:
                    LOG.warning("%d of %d nodes connected after %.0f s (sampling.node_wait_s): starting with them",
                                len(node_ids), num_nodes, self.wait_s)
                    break
                raise NodesMissing(f"only {len(node_ids)} of the {self.needed} nodes a round needs connected "
                                   f"within {self.wait_s:.0f} s (sampling.node_wait_s, sampling.min_available_clients)")
            time.sleep(poll)
        self.refresh()

    def refresh(self) -> list[int]:
        """Ask nodes seen for the first time which partition they hold, and rebuild the
        roster from the live nodes: a node that rejoined under a new id takes its
        partition back; a second live node claiming a held partition is refused.
        Returns the nodes to sample from: rostered ones in partition order, then those
        that answered no roster query, by node id."""
        live = list(self._grid.get_node_ids())
        if live == self._last_live:  # nothing joined or left: the same roster
            return list(self._last_order)
        new = [node for node in live if node not in self.claims and node not in self.unrostered]
        if new and isinstance(self._grid, KnowsPartitions):
            known = self._grid.partitions()
            self.claims.update({node: known[node] for node in new})
        elif new:
            self._query(new)
        alive = set(live)
        lost = [node for node in self.partition_of if node not in alive]
        for node in lost:
            LOG.warning("client %d (node %d) is gone", self.partition_of[node], node)
            self._gone.add(self.partition_of[node])
        roster: dict[int, int] = {}
        holder: dict[int, int] = {}
        for node, (partition, _) in self.claims.items():
            if node not in alive:
                continue
            if partition in holder:
                if node not in self._refused:
                    self._refused.add(node)
                    LOG.warning("node %d claims partition %d, which node %d holds: refused while that node is "
                                "connected", node, partition, holder[partition])
                continue
            holder[partition] = node
            roster[node] = partition
            if partition in self._gone:
                LOG.warning("client %d is back (node %d)", partition, node)
                self._gone.discard(partition)
            self._refused.discard(node)
        self.partition_of = roster
        self.num_examples = {node: self.claims[node][1] for node in roster}
        order = [*sorted(roster, key=roster.__getitem__), *sorted(n for n in self.unrostered if n in alive)]
        # Kept only when every live node is accounted for (none refused, none unanswered).
        settled = len(order) == len(live) and not self._refused
        self._last_live, self._last_order = (live, order) if settled else (None, [])
        return list(order)

    def _query(self, nodes: list[int]) -> None:
        queries = [Message(RecordDict(), dst_node_id=node, message_type=MessageType.QUERY) for node in nodes]
        replies = {r.metadata.src_node_id: r for r in self._exchange(queries, self.query_timeout)}
        for node in nodes:
            reply = replies.get(node)
            metrics = None if reply is None or reply.has_error() else next(iter(reply.content.metric_records.values()), None)
            if metrics is None or "partition-id" not in metrics:
                why = ("no reply" if reply is None else one_line(reply.error.reason or "") if reply.has_error()
                       else "no partition-id in its reply")
                LOG.warning("node %d answered no roster query (%s): a client without flowerbed's `query` handler, "
                            "counted under its node id", node, why)
                self.unrostered.add(node)
                continue
            self.claims[node] = (int(metrics["partition-id"]), int(metrics.get("num-examples", 0)))

    def label_of(self, node_id: int) -> int | None:
        """The id a node's metrics are kept under: its partition; a node outside the
        roster that answered no roster query, its node id; else None."""
        if node_id in self.partition_of:
            return self.partition_of[node_id]
        return node_id if node_id in self.unrostered else None

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
        partition = self.label_of(reply.metadata.src_node_id)
        if partition is not None:
            merged: dict[str, float] = {}
            for record in reply.content.metric_records.values():
                merged.update({k: v for k, v in record.items() if isinstance(v, (int, float))})
            tally.metrics.setdefault(kind, {})[partition] = with_flowerbed_names(merged, kind)

    # --- Grid ----------------------------------------------------------------------

    def _exchange(self, messages: list[Message], timeout: float | None) -> list[Message]:
        """Send ``messages`` and collect their replies until all came or ``timeout``.
        Over gRPC (Flower's HTTP grid), push and pull here: Flower's loop sleeps 3 s
        between pulls, most of a round at small scale; this one pulls after 20 ms,
        backing off to 250 ms while nothing comes. Other grids keep their own loop."""
        if not self._polls_slowly:
            return list(self._grid.send_and_receive(messages, timeout=timeout))
        ids = list(self._grid.push_messages(messages))
        asked = {i: m for i, m in zip(ids, messages) if i is not None}
        pending = set(asked)
        deadline = None if timeout is None else time.monotonic() + timeout
        replies: list[Message] = []
        wait = FIRST_PULL_S
        while pending and (deadline is None or time.monotonic() < deadline):
            got = [self._from_its_node(r, asked) for r in self._grid.pull_messages(pending)]
            replies += got
            pending -= {m.metadata.reply_to_message_id for m in got}
            if pending:
                time.sleep(wait)
                wait = FIRST_PULL_S if got else min(MAX_PULL_S, wait * 1.5)
        return replies

    def _from_its_node(self, reply: Message, asked: dict[str, Message]) -> Message:
        """The SuperLink answers for a node it marked offline with an error reply from
        itself (``src_node_id`` 1): the same error, from the node that was asked."""
        question = asked.get(reply.metadata.reply_to_message_id)
        if reply.has_error() and question is not None and reply.metadata.src_node_id != question.metadata.dst_node_id:
            return Message(reply.error, reply_to=question)
        return reply

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        messages = list(messages)
        self.last_sent = len(messages)
        self._traffic.bytes_sent += sum(content_bytes(m.content) for m in messages)
        sent = {m.metadata.dst_node_id: m for m in messages}
        replies = sorted((self._checked(r, sent) for r in self._exchange(messages, timeout)),
                         key=lambda r: self._order(r.metadata.src_node_id))
        usable = [i for i, r in enumerate(replies) if not r.has_error() and r.metadata.src_node_id in sent]
        for index, problem in odd_names([replies[i] for i in usable]).items():
            replies[usable[index]] = self._reject(replies[usable[index]], sent, problem)
        for reply in replies:
            self._record_reply(reply)
        answered = {r.metadata.src_node_id for r in replies}
        for node, message in sent.items():  # a node that died mid-round, or is too slow
            if node not in answered and message.metadata.message_type != MessageType.QUERY:
                kind = message.metadata.message_type
                LOG.warning("client %s: no %s reply within the round's timeout (sampling.round_timeout_s)",
                            self.label_of(node) if self.label_of(node) is not None else f"on node {node}", kind)
                self._traffic.failed[kind] = self._traffic.failed.get(kind, 0) + 1
        return replies

    def get_node_ids(self) -> Iterable[int]:
        """The nodes to sample from (:meth:`refresh`). Fewer than ``needed`` of them
        for ``wait_s`` in a row ends the run (Flower's strategies would wait forever)."""
        nodes = self.refresh()
        if len(nodes) >= self.needed:
            self._short_since = None
        elif self._short_since is None:
            self._short_since = time.monotonic()
        elif time.monotonic() - self._short_since > self.wait_s:
            raise NodesMissing(f"{len(nodes)} of the {self.needed} clients a round needs stayed connected for "
                               f"{self.wait_s:.0f} s (sampling.min_available_clients, sampling.node_wait_s)")
        return nodes

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
