"""Strategies by name.

Each entry pairs a Flower Message-API strategy class with a pydantic model of the
parameters a scenario's ``[strategy]`` table may set. A new strategy joins with one
line in :data:`STRATEGIES`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flwr.serverapp.strategy import FedAvg, FedProx, Strategy
from pydantic import BaseModel, ConfigDict, Field

from flowerbed.strategies.fedpub import FedPub, FedPubParams
from flowerbed.strategies.fedloge import FedLoGe, FedLoGeParams
from flowerbed.strategies.local_keys import FedBABU, FedPer, LocalOnly


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FedProxParams(NoParams):
    proximal_mu: float = Field(default=0.01, ge=0)


class FedBABUParams(NoParams):
    finetune_epochs: int = Field(default=5, ge=0)


@dataclass(frozen=True)
class StrategyEntry:
    """A strategy class and the model of its scenario parameters."""

    factory: Callable[..., Strategy]
    params: type[BaseModel] = NoParams
    # Model names the strategy needs (None: any).
    models: tuple[str, ...] | None = None

    def build(self, params: dict[str, Any], seed: int, **common: Any) -> Strategy:
        """Instantiate with validated ``params`` plus the sampling keywords in ``common``;
        strategies that draw random numbers of their own also get the run's ``seed``."""
        checked = self.params.model_validate(params).model_dump()
        if "seed" in inspect.signature(self.factory).parameters:
            checked["seed"] = seed
        return self.factory(**common, **checked)


STRATEGIES: dict[str, StrategyEntry] = {
    "fedavg": StrategyEntry(FedAvg),
    "fedprox": StrategyEntry(FedProx, FedProxParams),
    "fedper": StrategyEntry(FedPer),
    "local": StrategyEntry(LocalOnly),
    "fedpub": StrategyEntry(FedPub, FedPubParams, models=("masked_gcn",)),
    "fedbabu": StrategyEntry(FedBABU, FedBABUParams),
    "fedloge": StrategyEntry(FedLoGe, FedLoGeParams, models=("mlp", "mlp2", "cnn")),
}
