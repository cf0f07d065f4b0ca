"""FedNova: with equal local steps it is FedAvg; with unequal steps each normalised
update counts by its weight p_k, rescaled by tau_eff (Wang et al., 2020, eq. 4)."""

from __future__ import annotations

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, Metadata, MetricRecord, RecordDict
from inprocess import InProcessGrid

from flowerbed.strategies.contract import NoParams
from flowerbed.strategies.fednova import FedNova

SAMPLING = {"fraction_train": 1.0, "min_train_nodes": 2, "min_available_nodes": 2}


def _reply(node: int, w: float, n: int, steps: int) -> Message:
    metadata = Metadata(run_id=1, message_id=f"m{node}", src_node_id=node, dst_node_id=0, reply_to_message_id="",
                        group_id="", created_at=0.0, ttl=100.0, message_type="train")
    content = RecordDict({"arrays": ArrayRecord({"w": torch.full((3,), w)}),
                          "metrics": MetricRecord({"num-examples": n, "local-steps": steps, "train_loss": 0.1})})
    return Message(content=content, metadata=metadata)


def _round(x: float, replies: list[Message]) -> np.ndarray:
    strategy = FedNova(NoParams(), **SAMPLING)
    list(strategy.configure_train(1, ArrayRecord({"w": torch.full((3,), x)}), ConfigRecord(),
                                  InProcessGrid(client_app=None, num_nodes=2)))
    arrays, _ = strategy.aggregate_train(1, replies)
    return arrays["w"].numpy()


def test_equal_local_steps_give_fedavg():
    replies = [_reply(1, 2.0, 10, 5), _reply(2, 6.0, 30, 5)]
    np.testing.assert_allclose(_round(1.0, replies), (10 * 2.0 + 30 * 6.0) / 40, rtol=1e-6)


def test_unequal_steps_normalise_each_update():
    # x = 0; client 1: n 10, 2 steps, x_1 = 2 (1 per step); client 2: n 30, 8 steps, x_2 = 8 (1 per step):
    # p = (1/4, 3/4), tau_eff = 6.5, x' = 6.5 * (1/4 * 1 + 3/4 * 1) = 6.5.
    np.testing.assert_allclose(_round(0.0, [_reply(1, 2.0, 10, 2), _reply(2, 8.0, 30, 8)]), 6.5, rtol=1e-6)
    # client 1: 1 step to 4 (d_1 = 4); client 2: 4 steps to 4 (d_2 = 1): p = (1/2, 1/2), tau_eff = 2.5,
    # x' = 2.5 * (2 + 0.5) = 6.25, where FedAvg gives 4 (the slow client's update is not diluted).
    np.testing.assert_allclose(_round(0.0, [_reply(1, 4.0, 20, 1), _reply(2, 4.0, 20, 4)]), 6.25, rtol=1e-6)
