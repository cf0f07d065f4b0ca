"""FED-PUB's options (the ``[strategy.fedpub]`` table)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from flowerbed.strategies.contract import StrategyParams


class FedPubParams(StrategyParams):
    """The ``[strategy.fedpub]`` parameters of FED-PUB (defaults: spec §3 and §7)."""

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
    # Seed of the random proxy graph all clients embed; None: the run's seed (the server
    # sends the resolved value).
    proxy_seed: int | None = None
