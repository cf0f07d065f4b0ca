"""FED-PUB: Personalized Subgraph Federated Learning.

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

from collections.abc import Iterable
from logging import INFO
from typing import Any, Literal

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg
from flwr.serverapp.strategy.strategy_utils import sample_nodes
from flwr.supercore import log
from pydantic import BaseModel, ConfigDict, Field

from flowerbed.strategies.utils import arrays_of, combine, metrics_of, per_node_messages


class FedPubParams(BaseModel):
    """The ``[strategy]`` parameters of FED-PUB (defaults: spec §3 and §7)."""

    model_config = ConfigDict(extra="forbid")
    # Sharpness of the similarity weights; official Cora scripts: 3 (disjoint 10) and 5 (overlap 30).
    tau: float = Field(default=10.0, ge=0)
    agg_norm: Literal["exp", "cosine"] = "exp"
    # Weights of the global model: training nodes (paper reading) or uniform (official code).
    global_weighting: Literal["num_train_nodes", "uniform"] = "num_train_nodes"
    # "paper": differentiable mask L1 and proximal terms; "code_noop": as the official code,
    # computed on detached tensors, so they do nothing.
    regularizers: Literal["paper", "code_noop"] = "paper"
    mask_l1: float = Field(default=1e-3, ge=0)  # lambda1, also the eval-time prune threshold
    prox_l2: float = Field(default=1e-3, ge=0)  # lambda2
    proxy_seed: int | None = None  # None: the run's seed


def similarity(embeddings: np.ndarray) -> np.ndarray:
    """Cosine similarity S (K, K) of the rows of ``embeddings`` (K, D)."""
    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
    unit = embeddings / np.maximum(norms, 1e-12)
    return unit @ unit.T


def aggregation_weights(embeddings: np.ndarray, tau: float, agg_norm: str = "exp") -> np.ndarray:
    """alpha (K, K), row-stochastic: exp(tau * S_ij) / sum_k exp(tau * S_ik), or S normalised."""
    s = similarity(embeddings)
    if agg_norm == "cosine":
        return s / s.sum(axis=1, keepdims=True)
    logits = tau * s
    w = np.exp(logits - logits.max(axis=1, keepdims=True))  # the same ratios, no overflow
    return w / w.sum(axis=1, keepdims=True)


class FedPub(FedAvg):
    """Personalized aggregation by functional similarity; masks and optimizer stay local."""

    def __init__(self, *, tau: float = 10.0, agg_norm: str = "exp", global_weighting: str = "num_train_nodes",
                 regularizers: str = "paper", mask_l1: float = 1e-3, prox_l2: float = 1e-3,
                 proxy_seed: int | None = None, seed: int = 0, **fedavg: Any) -> None:
        super().__init__(**fedavg)
        self.tau, self.agg_norm, self.global_weighting = tau, agg_norm, global_weighting
        self.regularizers, self.mask_l1, self.prox_l2 = regularizers, mask_l1, prox_l2
        self.proxy_seed = seed if proxy_seed is None else proxy_seed
        self.personalized: dict[int, ArrayRecord] = {}  # node id -> theta_bar_i
        self.last_alpha: np.ndarray | None = None
        self.last_nodes: list[int] = []

    def summary(self) -> None:
        super().summary()
        log(INFO, "\t└──> FED-PUB: tau=%s agg_norm=%s regularizers=%s", self.tau, self.agg_norm, self.regularizers)

    def _client_config(self, config: ConfigRecord, server_round: int) -> ConfigRecord:
        config = ConfigRecord(dict(config))
        config.update({
            "server-round": server_round, "local-keys": "mask", "keep-optimizer": True,
            "mask-l1": self.mask_l1, "prox-l2": self.prox_l2, "prune": self.mask_l1,
            "regularizers": self.regularizers, "proxy-seed": self.proxy_seed,
        })
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
        alpha = aggregation_weights(h, self.tau, self.agg_norm)
        for i, node in enumerate(nodes):
            self.personalized[node] = combine(models, alpha[i])
        sizes = np.array([float(metrics_of(r)[self.weighted_by_key]) for r in valid])
        if self.global_weighting == "uniform":
            sizes = np.ones_like(sizes)
        self.last_alpha, self.last_nodes = alpha, nodes
        for reply in valid:  # a vector, not a metric to average
            del metrics_of(reply)["embedding"]
        metrics = self.train_metrics_aggr_fn([r.content for r in valid], self.weighted_by_key)
        return combine(models, sizes / sizes.sum()), metrics

    def round_report(self) -> tuple[dict[str, float], dict[str, Any]]:
        """Per-round metrics and the alpha matrix (rows and columns in node order)."""
        if self.last_alpha is None:
            return {}, {}
        alpha = self.last_alpha
        off = alpha[~np.eye(len(alpha), dtype=bool)]
        metrics = {"fedpub_alpha_self": float(np.diag(alpha).mean()),
                   "fedpub_alpha_other_max": float(off.max()) if off.size else 0.0}
        return metrics, {"alpha": alpha.round(5).tolist(), "nodes": self.last_nodes}

