"""Parameters of the baselines that have any (FedAvg, FedMedian, FedPer and local-only have none)."""

from __future__ import annotations

from pydantic import Field

from flowerbed.strategies.contract import StrategyParams


class FedProxParams(StrategyParams):
    # mu of the proximal term (mu / 2) ||w - w_global||^2 (Li et al., 2020, eq. 2).
    proximal_mu: float = Field(default=0.01, ge=0)


class FedBABUParams(StrategyParams):
    # Epochs of head fine-tuning on local data before personalized evaluation.
    finetune_epochs: int = Field(default=5, ge=0)


class FedTrimmedAvgParams(StrategyParams):
    # The fraction of replies cut at each end, per coordinate, before averaging.
    beta: float = Field(default=0.2, ge=0, lt=0.5)


class KrumParams(StrategyParams):
    # f, the number of Byzantine clients tolerated; Krum scores each update by its
    # distance to its n - f - 2 nearest others.
    num_malicious_nodes: int = Field(default=0, ge=0)
    # m > 1: Multi-Krum, the average of the m best-scored updates; 1: Krum's single one.
    num_nodes_to_select: int = Field(default=1, ge=1)
