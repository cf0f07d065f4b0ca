"""FED-PUB's server half: personalized aggregation by functional similarity.

FED-PUB: Personalized Subgraph Federated Learning.

Baek, Jeong, Jin, Yoon, Hwang, ICML 2023 (https://arxiv.org/abs/2206.10206);
official code JinheonBaek/FED-PUB. Spec: ``shared/specs/fedpub.md``.

Round t, for the sampled clients P:

1. client i loads its personalized model theta_bar_i (the initial global model in
   round 1), keeps its own masks M_i and Adam state, trains on its subgraph with
   CE + lambda1 * ||M||_1 + lambda2 * ||theta - theta_bar_i||_2, and returns theta_i
   (without masks) and its functional embedding h_i: the mean of its GNN's embedding
   over a random proxy graph shared by all clients (built from ``proxy_seed``);
2. the server computes::

       S_ij = cos(h_i, h_j)
       alpha_ij = exp(tau * S_ij) / sum_k exp(tau * S_ik)       (agg_norm = "exp")
       theta_bar_i = sum_j alpha_ij * theta_j
       theta_g = sum_j (n_j / sum_k n_k) * theta_j               (the global model)

   and sends each client its own theta_bar_i next round (per-node messages).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from logging import INFO
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy.strategy_utils import sample_nodes
from flwr.supercore import log

from flowerbed.strategies.common import ParamsFedAvg, arrays_of, combine, metrics_of, per_node_messages
from flowerbed.strategies.fedpub.maths import aggregation_weights, similarity
from flowerbed.strategies.fedpub.params import FedPubParams


class FedPub(ParamsFedAvg):
    """Personalized aggregation by functional similarity; masks and optimizer stay local."""

    name = "fedpub"

    def __init__(self, params: FedPubParams, *, seed: int = 0, **fedavg: Any) -> None:
        # Clients build the proxy graph from the seed they are sent: resolve "the run's".
        proxy_seed = seed if params.proxy_seed is None else params.proxy_seed
        super().__init__(params.model_copy(update={"proxy_seed": proxy_seed}), seed=seed, **fedavg)
        self.personalized: dict[int, ArrayRecord] = {}  # node id -> theta_bar_i
        self.last_alpha: np.ndarray | None = None
        self.last_similarity: np.ndarray | None = None
        self.last_nodes: list[int] = []

    def summary(self) -> None:
        super().summary()
        p = self.params
        log(INFO, "\t└──> FED-PUB: tau=%s agg_norm=%s regularizers=%s mask_l1=%s (%s) prune_threshold=%s", p.tau,
            p.agg_norm, p.regularizers, p.mask_l1, p.mask_l1_form, p.prune_threshold)

    def _client_config(self, config: ConfigRecord, server_round: int) -> ConfigRecord:
        config = self.with_params(config)
        config["server-round"] = server_round
        return config

    def _sample(self, grid: Grid, fraction: float, minimum: int) -> list[int]:
        count = max(int(len(list(grid.get_node_ids())) * fraction), minimum)
        nodes, _ = sample_nodes(grid, self.min_available_nodes, count)
        return sorted(nodes, key=list(grid.get_node_ids()).index)

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        nodes = self._sample(grid, self.fraction_train, self.min_train_nodes)
        config = self._client_config(config, server_round)
        return per_node_messages({n: self.personalized.get(n, arrays) for n in nodes}, config)

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        if self.fraction_evaluate == 0.0:
            return []
        nodes = self._sample(grid, self.fraction_evaluate, self.min_evaluate_nodes)
        config = self._client_config(config, server_round)
        return per_node_messages({n: self.personalized.get(n, arrays) for n in nodes}, config,
                                 MessageType.EVALUATE)

    def aggregate_train(self, server_round: int,
                        replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        valid, _ = self._check_and_log_replies(replies, is_train=True)
        if not valid:
            return None, None
        nodes = [r.metadata.src_node_id for r in valid]
        models = [arrays_of(r) for r in valid]
        h = np.array([metrics_of(r)["embedding"] for r in valid], dtype=np.float64)
        alpha = aggregation_weights(h, self.params.tau, self.params.agg_norm)
        for i, node in enumerate(nodes):
            self.personalized[node] = combine(models, alpha[i])
        sizes = np.array([float(metrics_of(r)[self.weighted_by_key]) for r in valid])
        if self.params.global_weighting == "uniform":
            sizes = np.ones_like(sizes)
        self.last_alpha, self.last_similarity, self.last_nodes = alpha, similarity(h), nodes
        for reply in valid:  # a vector, not a metric to average
            del metrics_of(reply)["embedding"]
        metrics = self.train_metrics_aggr_fn([r.content for r in valid], self.weighted_by_key)
        return combine(models, sizes / sizes.sum()), metrics

    def state(self, partition_of: Callable[[int], int]) -> dict[str, Any]:
        """The personalized models theta_bar_i, by partition: partition -> name -> array."""
        return {"personalized": {partition_of(node): {k: v.numpy() for k, v in arrays.items()}
                                 for node, arrays in self.personalized.items()}}

    def load_state(self, state: dict[str, Any], node_of: Callable[[int], int]) -> None:
        self.personalized = {node_of(partition): ArrayRecord({k: Array(v) for k, v in arrays.items()})
                             for partition, arrays in state["personalized"].items()}

    def round_report(self) -> tuple[dict[str, float], dict[str, Any]]:
        """Per-round metrics and the alpha matrix (rows and columns in node order): the
        mean self-weight alpha_ii (1/K when the weights are uniform, i.e. FedAvg), the
        largest other weight, and the mean cross-client similarity S_ij, i != j (near
        1 when the clients' functions have become the same)."""
        if self.last_alpha is None:
            return {}, {}
        alpha = self.last_alpha
        other = ~np.eye(len(alpha), dtype=bool)
        off = alpha[other]
        metrics = {"fedpub_alpha_self": float(np.diag(alpha).mean()),
                   "fedpub_alpha_other_max": float(off.max()) if off.size else 0.0,
                   "fedpub_similarity_other": float(self.last_similarity[other].mean()) if off.size else 1.0}
        return metrics, {"alpha": alpha.round(5).tolist(), "nodes": self.last_nodes}

