"""A scenario from a Flower run config: flowerbed's own, or a stock Flower app's.

Flower accepts only the run-config keys an app declares in its ``pyproject.toml``
(``[tool.flwr.app.config]``); flowerbed declares the quickstart scenario, flattened
(``"client.lr" = 0.05``), and two keys that carry any other scenario:

* ``scenario``: a scenario file of :mod:`flowerbed.sims` by name
  (``"fedpub_cora_disjoint10"``) or TOML text; the declared plain keys whose value
  differs from the quickstart's were set by the user, and apply on top of it;
* ``overrides``: ``"KEY=VALUE; KEY=VALUE"`` applied last.

A run config written for a stock Flower app (its ServerApp driving flowerbed's
ClientApp, say) carries keys such as ``num-server-rounds`` and ``local-epochs`` and none
of flowerbed's: it gets the quickstart scenario, with the Flower keys of
:data:`FLOWER_KEYS` read as their flowerbed counterparts. Keys flowerbed does not read
are reported (:attr:`RunConfig.ignored`), never an error: the SuperLink has already
checked them against the app that declared them.
"""

from __future__ import annotations

import functools
import tomllib
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

from flowerbed.sims.config import (RUN_CONFIG_OVERRIDES, RUN_CONFIG_SCENARIO, ConfigError, Scenario, apply_overrides,
                                   parse_scenario, set_path, unflatten)

#: The run-config keys of Flower's own examples (quickstart-pytorch and its kin) that a
#: flowerbed client understands, and what they are in a scenario.
FLOWER_KEYS = {
    "num-server-rounds": "rounds",
    "local-epochs": "client.local_epochs",
    "batch-size": "client.batch_size",
    "lr": "client.lr",
    "learning-rate": "client.lr",
    "fraction-train": "sampling.fraction_train",
    "fraction-evaluate": "sampling.fraction_evaluate",
}

#: The scenario a run config without flowerbed keys gets (the app's declared default).
DEFAULT_SCENARIO = "quickstart"


@dataclass(frozen=True)
class RunConfig:
    """What a run config says: the scenario, and how it was read."""

    scenario: Scenario
    # Whether the config came from flowerbed's own app (else: a stock Flower app's, and
    # the scenario is the quickstart's with the Flower keys it understood).
    flowerbed: bool
    ignored: tuple[str, ...] = ()  # keys flowerbed does not read
    applied: tuple[str, ...] = ()  # plain keys applied on top of a `scenario`
    understood: tuple[str, ...] = ()  # Flower keys read (a stock app's run config)

    def notes(self) -> list[str]:
        """One line per thing worth telling whoever started the run."""
        out = []
        if not self.flowerbed:
            out.append(f"run config has no flowerbed keys: the {DEFAULT_SCENARIO!r} scenario, with "
                       f"{', '.join(k for k in FLOWER_KEYS if k in self.understood) or 'no key'} read from it")
        if self.ignored:
            out.append(f"run config: keys flowerbed does not read, ignored: {', '.join(self.ignored)}")
        if self.applied:
            out.append(f"run config: applied on top of `scenario`: {', '.join(self.applied)}")
        return out


def _packaged(name: str) -> dict[str, Any]:
    packaged = files("flowerbed.sims") / f"{name.removesuffix('.toml')}.toml"
    if not packaged.is_file():
        raise ConfigError(f"scenario: no scenario file {name!r} in flowerbed.sims")
    tree = tomllib.loads(packaged.read_text())
    tree.setdefault("name", name.removesuffix(".toml"))
    return tree


@functools.cache
def declared_defaults() -> dict[str, Any]:
    """The run config flowerbed's pyproject.toml declares: the quickstart, flattened."""
    return parse_scenario(_packaged(DEFAULT_SCENARIO)).to_run_config()


def _is_flowerbed_key(key: str) -> bool:
    head = key.split(".", 1)[0]
    return head in Scenario.model_fields or key in (RUN_CONFIG_SCENARIO, RUN_CONFIG_OVERRIDES)


def read_run_config(run_config: dict[str, Any]) -> RunConfig:
    """Read ``run_config`` (see the module docstring); a bad scenario is a ConfigError."""
    ours = {k: v for k, v in run_config.items() if _is_flowerbed_key(k)}
    others = {k: v for k, v in run_config.items() if not _is_flowerbed_key(k)}
    if not ours:
        understood = {FLOWER_KEYS[k]: v for k, v in others.items() if k in FLOWER_KEYS}
        tree = _packaged(DEFAULT_SCENARIO)
        for path, value in understood.items():
            set_path(tree, path, value)
        return RunConfig(parse_scenario(tree), flowerbed=False,
                         ignored=tuple(sorted(k for k in others if k not in FLOWER_KEYS)),
                         understood=tuple(k for k in others if k in FLOWER_KEYS))
    whole = str(ours.pop(RUN_CONFIG_SCENARIO, "") or "").strip()
    extra = [o.strip() for o in str(ours.pop(RUN_CONFIG_OVERRIDES, "") or "").split(";") if o.strip()]
    ignored = tuple(sorted(others))
    if not whole:
        return RunConfig(parse_scenario(apply_overrides(unflatten(ours), extra)), True, ignored)
    tree = tomllib.loads(whole) if "=" in whole else _packaged(whole)
    # Flower fills every declared key with its default: the ones the user changed stand out.
    defaults = declared_defaults()
    applied = {k: v for k, v in ours.items() if k in defaults and defaults[k] != v}
    for path, value in applied.items():
        set_path(tree, path, value)
    return RunConfig(parse_scenario(apply_overrides(tree, extra)), True, ignored, tuple(sorted(applied)))
