"""flowerbed's simulation engine: Flower's ServerApp over a Grid served by Ray actors.

Flower's Simulation Engine keeps messages in its in-memory SuperLink state, which a
thread scans for each node every 0.1 s (a pass costs O(nodes x messages): seconds a
round at 1,000 clients), and pickles the ClientApp with every message. Here the
ServerApp (unchanged) runs over :class:`ActorGrid`, a Grid (Flower's own abstract
interface) that hands each message straight to a pool of Ray actors and collects
the replies as they finish:

* each actor builds the ClientApp once (:class:`ClientWorker`), and takes the
  dataset and the partition the driver made from Ray's object store (one shared,
  read-only copy; no actor computes the partition again);
* a node is ``(partition id, Context)``: the driver keeps every node's Context (its
  ``state`` included) and sends it with the node's message, as Flower's engine does,
  so a round costs O(sampled clients) whatever the number of nodes;
* the grid knows each node's partition (:meth:`ActorGrid.partitions`): no roster
  query round;
* a call carries a batch of messages when many wait, pickled by the standard pickler,
  and the round's global arrays go into the object store once, not into every message.

Replies are identical to Flower's engine's (the same ClientApp on the same
messages): :class:`~flowerbed.server.grid.RosterGrid` orders them by partition
before any strategy sees them.
"""

from __future__ import annotations

import copy
import logging
import math
import pickle
import time
import traceback
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

from flwr.app import ArrayRecord, Context, Error, Message, RecordDict
from flwr.serverapp import Grid

LOG = logging.getLogger("flowerbed")

#: Node ids of the simulated nodes: NODE_ID_BASE + partition id.
NODE_ID_BASE = 1 << 20
#: Calls on an actor at once. One: a call is sent when the one before has come back,
#: so a process that dies takes only the call it was running with it (a reply on its
#: way out when it died would be lost with it otherwise).
DEPTH = 1
#: A call carries several messages when many wait: each Ray call costs the driver and
#: the actor milliseconds of their CPUs (both ends' Ray machinery, two context
#: switches), more than a small client's training. Batches are a quarter of an actor's
#: share of the waiting messages (small at the end of a round, so actors finish
#: together), at most MAX_BATCH; below BATCH_FROM waiting messages per actor, one each.
MAX_BATCH, BATCH_FROM = 16, 4
CLIENT_APP_RAISED_EXCEPTION = 3  # Flower's ErrorCode
NODE_UNAVAILABLE = 4  # Flower's ErrorCode: the process serving the node died


class ClientWorker:
    """A Ray actor's body: one ClientApp, built once, serving many nodes in turn."""

    def __init__(self, build_app: Callable[..., Any], *recipe: Any) -> None:
        self.app = build_app(*recipe)

    def adopt(self, scenario, shared) -> None:
        """Take the driver's dataset and partition (Ray resolved the object ref: the
        arrays are read-only views of the object store)."""
        from flowerbed.sims.task import adopt

        adopt(scenario, *shared)

    def handle(self, payload: bytes, *records: Any) -> bytes:
        """A batch of ``(message, context, arrays)`` in, ``[(reply, context), ...]`` out,
        pickled: each reply, and the node's Context as the ClientApp left it (None if it
        raised: as in Flower's engine, a failed call changes no state). ``arrays`` name
        the message's ArrayRecords among ``records`` (Ray's object store holds one copy
        of the round's broadcast). Pickled here and in the driver with the standard
        pickler: Ray's cloudpickle visits every object of a message in Python."""
        out = []
        for message, context, arrays in pickle.loads(payload):
            for name, index in arrays:
                message.content[name] = records[index]
            try:
                out.append((self.app(message=message, context=context), context))
            except Exception as err:  # noqa: BLE001 - a failed client is a reply, as in Flower
                reason = "".join(traceback.format_exception(err)).strip()
                out.append((Message(Error(CLIENT_APP_RAISED_EXCEPTION, reason), reply_to=message), None))
        return pickle.dumps(out, protocol=pickle.HIGHEST_PROTOCOL)


@dataclass
class _Slot:
    """An actor and the messages it holds, in the order it runs them."""

    actor: Any
    running: deque = field(default_factory=deque)  # the futures of its calls


class ActorPool:
    """``size`` Ray actors with ``resources`` each, running :class:`ClientWorker`.
    Actors start at once (their imports overlap the driver's own set-up); a dead
    actor is replaced."""

    def __init__(self, size: int, resources: dict[str, float], build_app: Callable[..., Any], recipe: tuple) -> None:
        import ray

        self._remote = ray.remote(ClientWorker).options(**resources)
        self._make = lambda: self._remote.remote(build_app, *recipe)
        self._adopt: tuple | None = None
        self.slots = [_Slot(self._make()) for _ in range(size)]

    def share(self, scenario, shared_ref) -> None:
        """Every actor, now and replaced later, adopts the driver's data first."""
        self._adopt = (scenario, shared_ref)
        for slot in self.slots:
            slot.actor.adopt.remote(scenario, shared_ref)

    def ready(self) -> None:
        """Wait until every actor is built and has adopted the data."""
        import ray

        ray.get([slot.actor.__ray_ready__.remote() for slot in self.slots])

    def replace(self, slot: _Slot) -> None:
        import ray

        ray.kill(slot.actor, no_restart=True)
        slot.actor = self._make()
        slot.running.clear()
        if self._adopt is not None:
            slot.actor.adopt.remote(*self._adopt)

    def free_slot(self) -> _Slot | None:
        slot = min(self.slots, key=lambda s: len(s.running))
        return slot if len(slot.running) < DEPTH else None

    def shutdown(self) -> None:
        import ray

        for slot in self.slots:
            ray.kill(slot.actor, no_restart=True)


class ActorGrid(Grid):
    """The nodes of one simulation (node ``NODE_ID_BASE + i`` holds partition ``i``),
    served by an :class:`ActorPool`."""

    def __init__(self, pool: ActorPool, num_nodes: int, run_id: int, num_examples: list[int] | None = None) -> None:
        from flwr.supercore.run import Run

        self.pool = pool
        self._run = Run.create_empty(run_id)
        self.contexts = {
            NODE_ID_BASE + i: Context(run_id=run_id, node_id=NODE_ID_BASE + i,
                                      node_config={"partition-id": i, "num-partitions": num_nodes},
                                      state=RecordDict(), run_config={})
            for i in range(num_nodes)}
        self._num_examples = num_examples or [0] * num_nodes
        self._queue: deque[Message] = deque()  # pushed, not yet on an actor
        self._inflight: dict[Any, tuple[_Slot, list[Message]]] = {}  # call's future -> (slot, its messages)
        self._replies: dict[str, Message] = {}  # message id -> reply, not yet pulled
        self._stored: dict[int, tuple[ArrayRecord, Any]] = {}  # id(ArrayRecord) -> (it, its object ref)

    # --- what flowerbed's roster reads ---------------------------------------------

    def partitions(self) -> dict[int, tuple[int, int]]:
        """node id -> (partition id, training examples): the roster, without a query round."""
        return {node: (node - NODE_ID_BASE, self._num_examples[node - NODE_ID_BASE]) for node in self.contexts}

    # --- Grid ----------------------------------------------------------------------

    def set_run(self, run) -> None:  # type: ignore[no-untyped-def]
        self._run = run

    @property
    def run(self):  # type: ignore[no-untyped-def]
        return self._run

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str,
                       ttl: float | None = None) -> Message:
        return Message(content, dst_node_id=dst_node_id, message_type=message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return list(self.contexts)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        self._stored = {}  # the arrays of the messages before: released
        ids = []
        for message in messages:
            if message.metadata.dst_node_id not in self.contexts:
                LOG.warning("no node %d in this simulation: message dropped", message.metadata.dst_node_id)
                continue
            message.metadata.__dict__["_message_id"] = uuid.uuid4().hex
            self._queue.append(message)
            ids.append(message.metadata.message_id)
        self._dispatch()
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        self._collect(timeout=0)
        return [self._replies.pop(i) for i in message_ids if i in self._replies]

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        pending = set(self.push_messages(messages))
        deadline = None if timeout is None else time.monotonic() + timeout
        replies: list[Message] = []
        while pending:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                self._abandon(pending)
                break
            self._collect(timeout=left)
            for message_id in [i for i in pending if i in self._replies]:
                replies.append(self._replies.pop(message_id))
                pending.discard(message_id)
        return replies

    # --- dispatch ------------------------------------------------------------------

    def _dispatch(self) -> None:
        while self._queue and (slot := self.pool.free_slot()) is not None:
            waiting = len(self._queue) / len(self.pool.slots)
            size = 1 if waiting < BATCH_FROM else min(MAX_BATCH, math.ceil(waiting / 4))
            batch = [self._queue.popleft() for _ in range(min(size, len(self._queue)))]
            items, refs = [], []
            for message in batch:
                light, names, records = self._without_arrays(message)
                arrays = []
                for name, ref in zip(names, records):
                    if ref not in refs:
                        refs.append(ref)
                    arrays.append((name, refs.index(ref)))
                items.append((light, self.contexts[message.metadata.dst_node_id], arrays))
            payload = pickle.dumps(items, protocol=pickle.HIGHEST_PROTOCOL)
            # A future, not the object ref: waiting on futures costs nothing per call,
            # where each ray.wait costs the driver most of a millisecond.
            ref = slot.actor.handle.remote(payload, *refs).future()
            slot.running.append(ref)
            self._inflight[ref] = (slot, batch)

    def _without_arrays(self, message: Message) -> tuple[Message, list[str], list[Any]]:
        """The message without its ArrayRecords, their names, and object refs to them.
        A strategy sends one global ArrayRecord to every sampled client: it goes into
        Ray's object store once a round (one put, where each message would copy it in
        again), and each actor reads it from there."""
        import ray

        names = [name for name, record in message.content.items() if isinstance(record, ArrayRecord)]
        if not names:
            return message, [], []
        refs = []
        for name in names:
            record = message.content[name]
            if id(record) not in self._stored:
                self._stored[id(record)] = (record, ray.put(record))  # the record kept: its id stays its own
            refs.append(self._stored[id(record)][1])
        light = copy.copy(message)
        light.__dict__["_content"] = RecordDict({k: v for k, v in message.content.items() if k not in names})
        return light, names, refs

    def _collect(self, timeout: float | None) -> None:
        """Take the replies that are done (waiting up to ``timeout`` for the first)."""
        import ray

        if not self._inflight:
            return
        done, _ = futures.wait(list(self._inflight), timeout=timeout, return_when=futures.FIRST_COMPLETED)
        for ref in done:
            if ref not in self._inflight:  # its actor died and was replaced meanwhile
                continue
            slot, batch = self._inflight.pop(ref)
            try:
                results = pickle.loads(ref.result())
            except ray.exceptions.RayActorError as err:
                self._actor_died(slot, batch, err)
                continue
            except ray.exceptions.RayError as err:  # Ray could not run the call: its clients fail
                results = [(Message(Error(CLIENT_APP_RAISED_EXCEPTION, str(err)), reply_to=m), None) for m in batch]
            if ref in slot.running:  # (not if its actor was replaced meanwhile)
                slot.running.remove(ref)
            for message, (reply, context) in zip(batch, results):
                if context is not None:
                    self.contexts[message.metadata.dst_node_id] = context
                self._store(reply)
        self._dispatch()

    def _store(self, reply: Message) -> None:
        reply.metadata.__dict__["_message_id"] = uuid.uuid4().hex
        self._replies[reply.metadata.reply_to_message_id] = reply

    def _actor_died(self, slot: _Slot, batch: list[Message], err: Exception) -> None:
        """The messages of the call the actor was running fail (its process died: out
        of memory, a crash); the actor is replaced."""
        LOG.warning("the process serving client(s) %s died: %s",
                    ", ".join(str(m.metadata.dst_node_id - NODE_ID_BASE) for m in batch),
                    str(err).splitlines()[0] if str(err) else type(err).__name__)
        lost = [*batch, *(m for ref in list(slot.running) if ref in self._inflight for m in self._inflight.pop(ref)[1])]
        self.pool.replace(slot)
        for failed in lost:
            self._store(Message(Error(NODE_UNAVAILABLE, f"client process died: {type(err).__name__}"),
                                reply_to=failed))

    def _abandon(self, pending: set[str]) -> None:
        """Past the round's timeout: drop what has not started, and replace the actors
        still busy with these messages (a reply after the deadline is not waited for;
        other messages of their calls go back to the queue)."""
        self._queue = deque(m for m in self._queue if m.metadata.message_id not in pending)
        late = {id(slot): slot for slot, batch in self._inflight.values()
                if any(m.metadata.message_id in pending for m in batch)}
        for slot in late.values():
            behind = [m for ref in list(slot.running) if ref in self._inflight for m in self._inflight.pop(ref)[1]]
            self._queue.extend(m for m in behind if m.metadata.message_id not in pending)
            self.pool.replace(slot)
        self._dispatch()
