"""Strategies and add-ons by name, and the one place a scenario's strategy is resolved.

A strategy joins with one :func:`register` call (one line in
:mod:`flowerbed.strategies`, or from a test or a user's module at run time); an
add-on, a wrapper around another strategy such as GGEUR, with :func:`register_addon`.
:func:`resolve_strategy` validates a scenario's ``[strategy]`` against them, before
any worker starts, and builds the Flower strategy the ServerApp runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flwr.serverapp.strategy import Strategy
from pydantic import ValidationError

from flowerbed.sims.config import ConfigError, Scenario, format_error
from flowerbed.strategies.contract import ClientHalf, NoParams, StrategyParams

#: ``server(params, seed=..., **sampling)``: the Flower strategy of validated ``params``;
#: ``sampling`` holds Flower's FedAvg keywords (fraction_train, min_train_nodes, ...).
ServerFactory = Callable[..., Strategy]
#: ``wrap(inner, params, seed)``: an add-on around the strategy ``inner``.
AddonFactory = Callable[[Strategy, Any, int], Strategy]


@dataclass(frozen=True)
class StrategyEntry:
    """A strategy: its parameters model, its two halves, the models it can train."""

    name: str
    server: ServerFactory
    params: type[StrategyParams] = NoParams
    client: ClientHalf | None = None  # None: plain local training (FedAvg's client)
    models: tuple[str, ...] | None = None  # model names it needs (None: any)
    datasets: tuple[str, ...] | None = None  # dataset names it can read (None: any)


@dataclass(frozen=True)
class AddonEntry:
    """An add-on: a wrapper around the strategies in ``composes_with``."""

    name: str
    wrap: AddonFactory
    params: type[StrategyParams] = NoParams
    client: ClientHalf | None = None
    models: tuple[str, ...] | None = None
    composes_with: tuple[str, ...] = ()


STRATEGIES: dict[str, StrategyEntry] = {}
ADDONS: dict[str, AddonEntry] = {}


def register(entry: StrategyEntry, *, replace: bool = False) -> StrategyEntry:
    """Add a strategy (``replace``: let it take the place of one of the same name)."""
    if not replace and (entry.name in STRATEGIES or entry.name in ADDONS):
        raise ValueError(f"a strategy or add-on named {entry.name!r} is registered already")
    STRATEGIES[entry.name] = entry
    return entry


def register_addon(entry: AddonEntry, *, replace: bool = False) -> AddonEntry:
    if not replace and (entry.name in STRATEGIES or entry.name in ADDONS):
        raise ValueError(f"a strategy or add-on named {entry.name!r} is registered already")
    ADDONS[entry.name] = entry
    return entry


def unregister(name: str) -> None:
    STRATEGIES.pop(name, None)
    ADDONS.pop(name, None)


def client_halves() -> list[ClientHalf]:
    """Every registered client half: strategies' first, then add-ons' (the order their
    mods wrap the local work, outermost first)."""
    entries = [*STRATEGIES.values(), *ADDONS.values()]
    return [e.client for e in entries if e.client is not None]


def _entry_of(name: str) -> StrategyEntry | AddonEntry:
    return STRATEGIES.get(name) or ADDONS[name]


def validate_params(name: str, table: dict[str, Any]) -> StrategyParams:
    """``[strategy.<name>]`` as the strategy's parameters model; ConfigError naming the key."""
    params = _entry_of(name).params
    try:
        return params.model_validate(table)
    except ValidationError as err:
        first = err.errors()[0]
        key = f"strategy.{name}.{'.'.join(map(str, first['loc']))}"
        if first["type"] == "extra_forbidden":
            raise ConfigError(f"{key}: unknown key for strategy {name!r}; allowed keys here: "
                              f"{', '.join(params.model_fields) or '(none)'}") from None
        raise ConfigError(f"strategy.{name}.{format_error(err, params)}") from None


def _method_part(name: str, params: StrategyParams) -> str:
    changed = params.non_defaults()
    return name + (f"({','.join(f'{k}={v}' for k, v in changed.items())})" if changed else "")


@dataclass(frozen=True)
class ResolvedStrategy:
    """A scenario's strategy, validated: the base strategy and its add-ons, with params."""

    entry: StrategyEntry
    params: StrategyParams
    addons: tuple[tuple[AddonEntry, StrategyParams], ...] = ()

    @property
    def method(self) -> str:
        """The strategy, its add-ons and their non-default options, e.g.
        ``fedavg+ggeur(augment=isotropic)``: what a run is compared as."""
        parts = [_method_part(self.entry.name, self.params)]
        parts += [_method_part(entry.name, params) for entry, params in self.addons]
        return "+".join(parts)

    def logged_params(self) -> dict[str, Any]:
        """Every option, defaults included, as ``strategy.<name>.<key>``."""
        out: dict[str, Any] = {}
        for name, params in ((self.entry.name, self.params), *((e.name, p) for e, p in self.addons)):
            out.update({f"strategy.{name}.{k}": v for k, v in params.model_dump(mode="json").items()})
        return out

    def build(self, seed: int, **sampling: Any) -> Strategy:
        """The Flower strategy: the base one, wrapped by each add-on in turn."""
        strategy = self.entry.server(self.params, seed=seed, **sampling)
        for entry, params in self.addons:
            strategy = entry.wrap(strategy, params, seed)
        return strategy


def resolve_strategy(scenario: Scenario) -> ResolvedStrategy:
    """Validate ``scenario.strategy``: the name, the add-ons, every table in the file
    (also those of strategies not in use) and the model each one needs."""
    config = scenario.strategy
    if config.name not in STRATEGIES:
        raise ConfigError(f"strategy.name: unknown strategy {config.name!r}; allowed: {', '.join(STRATEGIES)}")
    for name in (config.model_extra or {}):
        if name not in STRATEGIES and name not in ADDONS:
            raise ConfigError(f"strategy.{name}: no strategy or add-on of that name; allowed: "
                              f"{', '.join([*STRATEGIES, *ADDONS])}")
    tables = {name: validate_params(name, config.table(name)) for name in (config.model_extra or {})}
    entry = STRATEGIES[config.name]
    params = tables[config.name] if config.name in tables else validate_params(config.name, {})
    _check_model(scenario, config.name, entry.models, "strategy.name")
    if entry.datasets and scenario.dataset.name not in entry.datasets:
        raise ConfigError(f"strategy.name: {config.name!r} needs dataset.name in {list(entry.datasets)}, "
                          f"not {scenario.dataset.name!r}")
    addons = []
    for name in config.addons:
        if name not in ADDONS:
            raise ConfigError(f"strategy.addons: unknown add-on {name!r}; allowed: {', '.join(ADDONS) or '(none)'}")
        addon = ADDONS[name]
        if config.name not in addon.composes_with:
            raise ConfigError(f"strategy.addons: {name!r} does not compose with strategy {config.name!r}; "
                              f"it composes with {', '.join(addon.composes_with)}")
        _check_model(scenario, name, addon.models, "strategy.addons")
        addons.append((addon, tables[name] if name in tables else validate_params(name, {})))
    return ResolvedStrategy(entry, params, tuple(addons))


def _check_model(scenario: Scenario, name: str, needs: tuple[str, ...] | None, key: str) -> None:
    if needs and scenario.model.name not in needs:
        raise ConfigError(f"{key}: {name!r} needs model.name in {list(needs)}, not {scenario.model.name!r}")
