"""Untrusted replies: a client's reply is checked against the message it answers before
any strategy sees it.

A reply that fails a check is turned into an error reply (Flower's ``Message(error,
reply_to=...)``), so every strategy, Flower's own included, leaves it out of the
aggregate as it does a client that crashed, and the round goes on. The checks:

* each ArrayRecord the server sent comes back with no array it was not sent (a client
  may keep some, a personal head say), each array with the shape and dtype it was sent
  with (a float16 reply would turn the global model float16; a shape (1,) array would
  broadcast), except that an integer array may answer a floating one: Flower's aggregation
  averages BatchNorm's ``num_batches_tracked`` counter into a float, and the client's
  model holds it as the integer it is;
* the replies of one round carry the same array names: one that lacks what the
  others carry is rejected (a missing key fails Flower's aggregation for everyone);
* every floating-point array in the reply is finite (one NaN makes the mean NaN);
* the reply's ``num-examples`` (the aggregation weight) is a finite number >= 0;
* the reply's records are at most ``max_bytes`` in all.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
from flwr.app import Error, Message

#: The error code of a rejected reply (Flower's codes end at 8).
REJECTED_CODE = 100
REJECTED_PREFIX = "rejected: "


def reply_problem(sent: Message, reply: Message, max_bytes: int) -> str | None:
    """Why ``reply`` (to ``sent``) must not be aggregated, or None if it may."""
    size = sum(record.count_bytes() for record in reply.content.values())
    if size > max_bytes:
        return f"{size} bytes, above sampling.max_reply_mb ({max_bytes} bytes)"
    sent_records = sent.content.array_records
    for key, record in reply.content.array_records.items():
        expected = sent_records.get(key)
        if expected is not None and not set(record) <= set(expected):
            return f"arrays {key!r}: not sent {sorted(set(record) - set(expected))}"
        for name, array in record.items():
            if expected is not None:
                want = expected[name]
                if tuple(array.shape) != tuple(want.shape) or not dtype_fits(array.dtype, want.dtype):
                    return (f"array {key}/{name}: {array.dtype}{list(array.shape)}, "
                            f"sent as {want.dtype}{list(want.shape)}")
            values = array.numpy()
            if np.issubdtype(values.dtype, np.floating) and not np.isfinite(values).all():
                return f"array {key}/{name}: not finite"
    for record in reply.content.metric_records.values():
        weight = record.get("num-examples")
        if weight is not None and not (isinstance(weight, (int, float)) and math.isfinite(weight) and weight >= 0):
            return f"num-examples = {weight!r}"
    return None


def dtype_fits(got: str, sent: str) -> bool:
    """Whether an array of dtype ``got`` may answer one sent as ``sent`` (see the module)."""
    if got == sent:
        return True
    return np.issubdtype(np.dtype(got), np.integer) and np.issubdtype(np.dtype(sent), np.floating)


def odd_names(replies: list[Message]) -> dict[int, str]:
    """Index -> why, for the replies whose ArrayRecords lack array names that most of the
    others carry (the most common set of names per record wins; ties: the larger set)."""
    names: dict[str, Counter] = {}
    for reply in replies:
        for key, record in reply.content.array_records.items():
            names.setdefault(key, Counter())[frozenset(record)] += 1
    usual = {key: max(counts, key=lambda n: (counts[n], len(n))) for key, counts in names.items()}
    odd = {}
    for index, reply in enumerate(replies):
        for key, want in usual.items():
            have = frozenset(reply.content.array_records.get(key, {}))
            if have != want:
                odd[index] = (f"arrays {key!r}: missing {sorted(want - have)}, unlike the other replies"
                              if have < want or not have else
                              f"arrays {key!r}: {sorted(have ^ want)} differ from the other replies")
                break
    return odd


def rejected_reply(sent: Message, reason: str) -> Message:
    """The error reply that stands for a rejected one (from the node ``sent`` went to)."""
    return Message(Error(REJECTED_CODE, REJECTED_PREFIX + reason), reply_to=sent)
