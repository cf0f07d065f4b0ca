"""Strategies by name.

Each entry pairs a Flower Message-API strategy class with a pydantic model of the
parameters a scenario's ``[strategy]`` table may set. A new strategy joins with one
line in :data:`STRATEGIES`.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flwr.serverapp.strategy import FedAvg, FedProx, Strategy
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, create_model

from flowerbed.strategies.fedloge import FedLoGe, FedLoGeParams
from flowerbed.strategies.fedpub import FedPub, FedPubParams
from flowerbed.strategies.ggeur import GGEUR, GGEURParams, GGEURSetting
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
    # Whether GGEUR's augmentation composes with it (``ggeur = true`` or a table).
    augmentable: bool = True

    @functools.cached_property  # one pydantic model per entry, not one per lookup
    def schema(self) -> type[BaseModel]:
        """The ``[strategy]`` parameters: the strategy's own, plus ``ggeur`` if augmentable."""
        if not self.augmentable:
            return self.params
        return create_model(f"{self.params.__name__}WithGGEUR", __base__=self.params,
                            ggeur=(GGEURSetting, None))

    def build(self, params: dict[str, Any], seed: int, **common: Any) -> Strategy:
        """Instantiate with validated ``params`` plus the sampling keywords in ``common``;
        strategies that draw random numbers of their own also get the run's ``seed``.
        With ``ggeur`` set, the strategy is wrapped in GGEUR's setup phase."""
        validated = self.schema.model_validate(params)
        checked = validated.model_dump(exclude={"ggeur"})
        if "seed" in inspect.signature(self.factory).parameters:
            checked["seed"] = seed
        strategy = self.factory(**common, **checked)
        ggeur = getattr(validated, "ggeur", None)
        return strategy if ggeur is None else GGEUR(strategy, ggeur, seed)


def ggeur_params(strategy_params: dict[str, Any]) -> GGEURParams | None:
    """The GGEUR settings of a ``[strategy]`` table, or None when it is off."""
    return TypeAdapter(GGEURSetting).validate_python(strategy_params.get("ggeur", False))


STRATEGIES: dict[str, StrategyEntry] = {
    "fedavg": StrategyEntry(FedAvg),
    "fedprox": StrategyEntry(FedProx, FedProxParams),
    "fedper": StrategyEntry(FedPer),
    "local": StrategyEntry(LocalOnly),
    "fedpub": StrategyEntry(FedPub, FedPubParams, models=("masked_gcn",), augmentable=False),
    "fedbabu": StrategyEntry(FedBABU, FedBABUParams),
    "fedloge": StrategyEntry(FedLoGe, FedLoGeParams, models=("mlp", "mlp2", "cnn"), augmentable=False),
}
