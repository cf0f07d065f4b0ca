"""Parameters of the baselines that have any (FedAvg, FedPer and local-only have none)."""

from __future__ import annotations

from pydantic import Field

from flowerbed.strategies.contract import StrategyParams


class FedProxParams(StrategyParams):
    # mu of the proximal term (mu / 2) ||w - w_global||^2 (Li et al., 2020, eq. 2).
    proximal_mu: float = Field(default=0.01, ge=0)


class FedBABUParams(StrategyParams):
    # Epochs of head fine-tuning on local data before personalized evaluation.
    finetune_epochs: int = Field(default=5, ge=0)
