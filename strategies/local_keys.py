"""FedAvg variants that differ only in what they tell clients: FedPer, local-only, FedBABU.

FedPer (Arivazhagan et al., 2019, https://arxiv.org/abs/1912.00818): the body is
averaged as in FedAvg, each client keeps its own classifier head::

    theta_body <- sum_k n_k / n * theta_body_k ;  theta_head_k stays on client k

Local-only: every client keeps its whole model; the server's average is never used
by a client, so the reported personalized accuracy is that of isolated training.

FedBABU (Oh, Kim, Yun, ICLR 2022, https://arxiv.org/abs/2106.06042): the head stays at
its (shared, random) initialisation during federated training and only the body is
learned and averaged; for personalization each client fine-tunes the head on its own
data before it is scored.

Clients learn this from the config: ``local-keys`` (parameters kept on the client and
never uploaded), ``freeze-keys`` (not trained), ``finetune-keys`` / ``finetune-epochs``
(trained on local data before evaluation).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg


class ConfiguredFedAvg(FedAvg):
    """FedAvg that adds fixed entries to every train and evaluate config it sends."""

    train_config: dict[str, Any] = {}
    evaluate_config: dict[str, Any] = {}

    @staticmethod
    def _merge(config: ConfigRecord, extra: dict[str, Any]) -> ConfigRecord:
        merged = ConfigRecord(dict(config))
        merged.update(extra)
        return merged

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        return super().configure_train(server_round, arrays, self._merge(config, self.train_config), grid)

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        return super().configure_evaluate(server_round, arrays, self._merge(config, self.evaluate_config), grid)


class FedPer(ConfiguredFedAvg):
    """Shared body, local head (every model of flowerbed names its classifier ``head``)."""

    train_config = evaluate_config = {"local-keys": "head"}


class LocalOnly(ConfiguredFedAvg):
    """No collaboration: each client trains and is scored on its own model alone."""

    train_config = evaluate_config = {"local-keys": "*"}


class FedBABU(ConfiguredFedAvg):
    """Body only during training (head frozen at its initialisation); the head is
    fine-tuned locally before personalized evaluation."""

    def __init__(self, *, finetune_epochs: int = 5, **fedavg: Any) -> None:
        super().__init__(**fedavg)
        self.train_config = {"freeze-keys": "head"}
        self.evaluate_config = {"finetune-keys": "head", "finetune-epochs": finetune_epochs}
