"""FedNova's server half (Wang et al., NeurIPS 2020, https://arxiv.org/abs/2007.07481).

Clients that take different numbers of local steps tau_k pull FedAvg's average toward
the ones that take more; FedNova averages the updates normalised by their steps and
rescales by the effective step count (plain SGD: a_k = tau_k)::

    p_k = n_k / n,  tau_eff = sum_k p_k tau_k
    x <- x - tau_eff * sum_k p_k (x - x_k) / tau_k  =  x + sum_k w_k (x_k - x),  w_k = tau_eff p_k / tau_k

With equal tau_k, w_k = p_k and this is FedAvg.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid

from flowerbed.strategies.common import ParamsFedAvg, arrays_of, combine, metrics_of

LOCAL_STEPS = "local-steps"


class FedNova(ParamsFedAvg):
    name = "fednova"

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        self.current = arrays  # x, what the updates are taken against
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round: int,
                        replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        valid, _ = self._check_and_log_replies(replies, is_train=True)
        if not valid:
            return None, None
        n = np.array([float(metrics_of(r)[self.weighted_by_key]) for r in valid])
        tau = np.array([float(metrics_of(r)[LOCAL_STEPS]) for r in valid])
        p = n / n.sum()
        w = (p * tau).sum() * p / tau
        arrays = combine([self.current, *map(arrays_of, valid)], np.concatenate([[1.0 - w.sum()], w]))
        return arrays, self.train_metrics_aggr_fn([r.content for r in valid], self.weighted_by_key)
