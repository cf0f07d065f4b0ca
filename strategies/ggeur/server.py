"""GGEUR: Geometric Knowledge-Guided Localized Global Distribution Alignment for FL.

Ma, Dai, Huang, Chen, CVPR 2025 (https://arxiv.org/abs/2503.06457); official code
WeiDai-David/2025CVPR_GGEUR. Spec: ``shared/specs/ggeur.md``.

GGEUR is a data-side add-on: :class:`GGEUR` wraps any strategy (FedAvg, FedProx, ...)
and runs a one-shot setup phase over the grid before the wrapped strategy's rounds::

    client k -> server:  per class c: n_k^c, mu_k^c, Sigma_k^c (biased 1/n)  [+ mu_k^c as prototype]
    server:   N_c = sum_k n_k^c ;  mu_c = sum_k n_k^c mu_k^c / N_c
              Sigma_c = (1/N_c) [ sum_k n_k^c Sigma_k^c + sum_k n_k^c (mu_k^c - mu_c)(mu_k^c - mu_c)^T ]
              (lambda_c, xi_c) = eigh(Sigma_c), descending, lambda clipped at 0
    server -> client k:  GD_c = {xi_c^m, lambda_c^m}_{m<=p}  [+ the other domains' prototypes mu_j^c]
    client k: D~_k = D_k + samples x + sum_m eps_m s(lambda_c^m) xi_c^m around local anchors
              [and around the foreign prototypes]; then train on D~_k every round.

The pooled Sigma_c is the covariance of the union of the contributing clients'
class-c embeddings; contributors are all clients (the paper's figure) or the code's
guide set (largest clients up to ``guide_threshold`` of N_c). Options follow the
spec's paper-vs-code table (§7); every choice is logged with the run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Result, Strategy
from torch import nn

from flowerbed.strategies.contract import hooks_of
from flowerbed.strategies.ggeur.params import GGEURParams
from flowerbed.strategies.ggeur.stats import (GEOMETRY_KEY, STATS_KEY, PooledMoments, array_record, covariances_of,
                                              eigen_geometry, guide_set)

NAME = "ggeur"
STATS_TYPE = "query.ggeur_stats"
GEOMETRY_TYPE = "query.ggeur_geometry"
#: The reply metric the code loop weights by (1 per client: an unweighted mean).
UNIT_WEIGHT = "unit-weight"


class GGEUR(Strategy):
    """Runs GGEUR's geometry exchange, then ``inner``'s rounds on augmented data (a
    wrapper, like Flower's DP strategies); clients are told so by GGEUR's parameters
    in every train and evaluate config."""

    def __init__(self, inner: Strategy, params: GGEURParams, seed: int = 0) -> None:
        self.inner, self.params, self.seed = inner, params, seed
        self._setup_metrics: dict[str, float] = {}
        if params.loop == "code":  # the code's unweighted mean of private models
            inner.weighted_by_key = UNIT_WEIGHT  # type: ignore[attr-defined]

    # --- the setup phase ----------------------------------------------------------

    def start(self, grid: Grid, initial_arrays: ArrayRecord, num_rounds: int = 3, timeout: float = 3600,
              train_config: ConfigRecord | None = None, evaluate_config: ConfigRecord | None = None,
              evaluate_fn=None) -> Result:
        self.exchange_geometry(grid, timeout)
        return super().start(grid, initial_arrays, num_rounds, timeout, train_config, evaluate_config,
                             evaluate_fn)

    def exchange_geometry(self, grid: Grid, timeout: float) -> None:
        """Phase 1: class statistics up, pooled geometry (and prototypes) down; each
        client then builds its augmented set."""
        p = self.params
        started = time.perf_counter()
        nodes = list(grid.get_node_ids())
        replies = self._ask(grid, [Message(RecordDict({"config": p.to_config(NAME)}), dst_node_id=n,
                                           message_type=STATS_TYPE) for n in nodes], timeout)
        stats = {r.metadata.src_node_id: {k: v.numpy() for k, v in r.content[STATS_KEY].items()} for r in replies}
        info = {r.metadata.src_node_id: r.content["info"] for r in replies}
        d = int(next(iter(stats.values()))["means"].shape[1])
        num_classes = max(int(i["num-classes"]) for i in info.values())
        multi = p.rule == "multi_domain" or (p.rule == "auto" and all(i.get("domain") for i in info.values()))
        geometry = self.pool(stats, d, num_classes)
        # The clients get the rule resolved.
        settings = p.model_copy(update={"rule": "multi_domain" if multi else "single_domain"}).to_config(NAME)
        messages = []
        for node in nodes:
            arrays = dict(geometry)
            if multi:  # the other domains' class prototypes
                others = [stats[o] for o in nodes if o != node]
                arrays["proto-classes"] = np.concatenate([s["classes"] for s in others]).astype(np.int64)
                arrays["prototypes"] = np.concatenate([s["means"] for s in others]).astype(np.float32)
            messages.append(Message(RecordDict({GEOMETRY_KEY: array_record(arrays), "config": settings}),
                                    dst_node_id=node, message_type=GEOMETRY_TYPE))
        built = self._ask(grid, messages, timeout)
        up = sum(r.content[STATS_KEY].count_bytes() for r in replies)
        down = sum(m.content[GEOMETRY_KEY].count_bytes() for m in messages)
        sizes = [int(r.content["metrics"]["num-examples"]) for r in built]
        self._setup_metrics = {
            "ggeur_bytes_up": float(up), "ggeur_bytes_down": float(down),
            "ggeur_setup_seconds": time.perf_counter() - started,
            "ggeur_multi_domain": float(multi),
            # Classes a client has one sample of: their uploaded mean is a raw embedding.
            "ggeur_singleton_classes": float(sum(int((s["counts"] == 1).sum()) for s in stats.values())),
            "ggeur_augmented_examples": float(sum(sizes)),
            "ggeur_generated_examples": float(sum(int(r.content["metrics"]["num-generated"]) for r in built)),
        }

    def pool(self, stats: dict[int, dict[str, np.ndarray]], d: int, num_classes: int) -> dict[str, np.ndarray]:
        """Per class held anywhere: the pooled count, trace, eigenvalues and eigenvectors,
        stacked: ``classes`` (C',), ``counts`` (C',), ``traces`` (C',), ``values`` (C', p),
        ``vectors`` (C', d, p)."""
        p = self.params
        counts = np.zeros((len(stats), num_classes), dtype=np.int64)
        for i, s in enumerate(stats.values()):
            counts[i, s["classes"]] = s["counts"]
        if p.pool_clients == "guide_set":
            contributes = np.zeros_like(counts, dtype=bool)
            for c in range(num_classes):
                contributes[guide_set(counts[:, c], p.guide_threshold), c] = True
        else:
            contributes = counts > 0
        pooled = {c: PooledMoments(d) for c in range(num_classes) if counts[:, c].sum() > 0}
        for i, s in enumerate(stats.values()):  # one client's covariances in memory at a time
            covs = covariances_of(s, d)
            for j, c in enumerate(s["classes"]):
                if contributes[i, c]:
                    pooled[int(c)].add(int(s["counts"][j]), s["means"][j].astype(np.float64), covs[j])
        classes = sorted(pooled)
        values, vectors, traces = [], [], []
        for c in classes:
            cov = pooled[c].covariance
            traces.append(np.trace(cov))
            value, vector = eigen_geometry(cov, p.num_eigenpairs, p.eigen_scale)
            values.append(value), vectors.append(vector)
        return {"classes": np.asarray(classes, dtype=np.int64), "counts": counts.sum(0)[classes],
                "traces": np.asarray(traces, dtype=np.float32), "values": np.asarray(values, dtype=np.float32),
                "vectors": np.asarray(vectors, dtype=np.float32)}

    @staticmethod
    def _ask(grid: Grid, messages: list[Message], timeout: float) -> list[Message]:
        replies = list(grid.send_and_receive(messages, timeout=timeout))
        failed = [r for r in replies if r.has_error()]
        if failed or len(replies) < len(messages):
            reason = failed[0].error.reason if failed else "no reply"
            raise RuntimeError(f"GGEUR setup: {len(failed) or len(messages) - len(replies)} client(s) "
                               f"failed {messages[0].metadata.message_type}: {reason}")
        return replies

    # --- ServerHooks: GGEUR's setup report; the wrapped strategy's other hooks ---------

    def setup_report(self) -> dict[str, float]:
        """The setup phase's sizes and counts (logged at round 0)."""
        return dict(self._setup_metrics)

    def evaluation_variants(self, model: nn.Module) -> dict[str, nn.Module]:
        return hooks_of(self.inner).evaluation_variants(model)

    def round_report(self) -> tuple[dict[str, float], dict[str, Any]]:
        return hooks_of(self.inner).round_report()

    def state(self, partition_of: Callable[[int], int]) -> dict[str, Any]:
        """The wrapped strategy's: the geometry is exchanged again when a run resumes
        (the same statistics give the same geometry), so also a client that lost its
        augmented set gets it back."""
        return hooks_of(self.inner).state(partition_of)

    def load_state(self, state: dict[str, Any], node_of: Callable[[int], int]) -> None:
        hooks_of(self.inner).load_state(state, node_of)

    # --- rounds: the wrapped strategy, clients told to train on their augmented set -----

    def _tag(self, messages: Iterable[Message]) -> list[Message]:
        messages = list(messages)
        for message in messages:
            message.content["config"].update(self.params.to_config(NAME))
        return messages

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        return self._tag(self.inner.configure_train(server_round, arrays, config, grid))

    def aggregate_train(self, server_round: int, replies: Iterable[Message]):
        return self.inner.aggregate_train(server_round, replies)

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        return self._tag(self.inner.configure_evaluate(server_round, arrays, config, grid))

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        return self.inner.aggregate_evaluate(server_round, replies)

    def summary(self) -> None:
        self.inner.summary()
