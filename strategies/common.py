"""What flowerbed's server halves share: Flower's FedAvg that sends its parameters
model with every message, reply handling, weighted model sums and per-node messages."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from flowerbed.strategies.contract import DefaultHooks, StrategyParams


class ParamsFedAvg(DefaultHooks, FedAvg):
    """Flower's FedAvg that adds ``params`` (its strategy's parameters model) to every
    train and evaluate config, under the strategy's one key; no hooks by default."""

    name: ClassVar[str]

    def __init__(self, params: StrategyParams, *, seed: int = 0, **fedavg: Any) -> None:
        super().__init__(**fedavg)
        self.params, self.seed = params, seed

    def with_params(self, config: ConfigRecord) -> ConfigRecord:
        merged = ConfigRecord(dict(config))
        merged.update(self.params.to_config(self.name))
        return merged

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        return super().configure_train(server_round, arrays, self.with_params(config), grid)

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        return super().configure_evaluate(server_round, arrays, self.with_params(config), grid)


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
