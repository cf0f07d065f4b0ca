"""Helpers shared by flowerbed's strategies: reply handling, weighted model sums and
per-node messages."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MessageType, RecordDict


def arrays_of(reply: Message) -> ArrayRecord:
    return next(iter(reply.content.array_records.values()))


def metrics_of(reply: Message):
    return next(iter(reply.content.metric_records.values()))


def combine(records: Sequence[ArrayRecord], weights: np.ndarray) -> ArrayRecord:
    """sum_j weights[j] * theta_j, key by key, for ArrayRecords with the same keys.

    ``weights``: (J,). Returns a new ArrayRecord (float arrays, in the records' key order).
    """
    keys = list(records[0].keys())
    stacked = [[r[k].numpy() for r in records] for k in keys]
    out = {k: np.tensordot(weights, np.stack(arrays), axes=1).astype(arrays[0].dtype)
           for k, arrays in zip(keys, stacked)}
    record = ArrayRecord()
    for key, value in out.items():
        record[key] = Array(np.ascontiguousarray(value))
    return record


def per_node_messages(arrays_for: dict[int, ArrayRecord], config: ConfigRecord,
                      message_type: str = MessageType.TRAIN) -> Iterable[Message]:
    """One message per node, each carrying that node's own model."""
    return [Message(RecordDict({"arrays": arrays, "config": config}), dst_node_id=node,
                    message_type=message_type) for node, arrays in arrays_for.items()]
