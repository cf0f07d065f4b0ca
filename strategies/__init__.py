"""Strategies by name.

Each entry pairs a Flower Message-API strategy class with a pydantic model of the
parameters a scenario's ``[strategy]`` table may set. A new strategy joins with one
line in :data:`STRATEGIES`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flwr.serverapp.strategy import FedAvg, FedProx, Strategy
from pydantic import BaseModel, ConfigDict, Field


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FedProxParams(NoParams):
    proximal_mu: float = Field(default=0.01, ge=0)


@dataclass(frozen=True)
class StrategyEntry:
    """A strategy class and the model of its scenario parameters."""

    factory: Callable[..., Strategy]
    params: type[BaseModel] = NoParams

    def build(self, params: dict[str, Any], **common: Any) -> Strategy:
        """Instantiate with validated ``params`` plus the sampling keywords in ``common``."""
        checked = self.params.model_validate(params).model_dump()
        return self.factory(**common, **checked)


STRATEGIES: dict[str, StrategyEntry] = {
    "fedavg": StrategyEntry(FedAvg),
    "fedprox": StrategyEntry(FedProx, FedProxParams),
}
