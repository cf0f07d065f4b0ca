"""Strategies whose clients keep part (or all) of the model: FedPer and local-only.

FedPer (Arivazhagan et al., 2019, https://arxiv.org/abs/1912.00818): the body is
averaged as in FedAvg, each client keeps its own classifier head::

    theta_body <- sum_k n_k / n * theta_body_k ;  theta_head_k stays on client k

Local-only: every client keeps its whole model; the server's average is never used
by a client, so the reported personalized accuracy is that of isolated training.

Both tell clients which parameters to keep through the train config
(``local-keys``); clients upload only the rest.
"""

from __future__ import annotations

from collections.abc import Iterable

from flwr.app import ArrayRecord, ConfigRecord, Message
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg


class KeepLocal(FedAvg):
    """FedAvg whose clients keep the parameters matching ``local_keys`` (name fragments)."""

    local_keys = ""

    def _with_keys(self, config: ConfigRecord) -> ConfigRecord:
        config = ConfigRecord(dict(config))
        config["local-keys"] = self.local_keys
        return config

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        return super().configure_train(server_round, arrays, self._with_keys(config), grid)

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        return super().configure_evaluate(server_round, arrays, self._with_keys(config), grid)


class FedPer(KeepLocal):
    """Shared body, local head (every model of flowerbed names its classifier ``head``)."""

    local_keys = "head"


class LocalOnly(KeepLocal):
    """No collaboration: each client trains and is scored on its own model alone."""

    local_keys = "*"
