"""Strategies by name: one folder per algorithm (parameters model, server half, client
half, shared maths; see ``strategies/README.md`` for the contract), registered here
with one line each. :func:`resolve_strategy` turns a scenario's ``[strategy]`` into
the Flower strategy the ServerApp runs.
"""

from flowerbed.strategies import baselines, fedlabel, fedloge, fednova, fedpub, fixmatch, fraug, ggeur
from flowerbed.strategies.registry import (ADDONS, STRATEGIES, AddonEntry, ResolvedStrategy, StrategyEntry,
                                           client_halves, register, register_addon, resolve_strategy, unregister)

__all__ = ["ADDONS", "STRATEGIES", "AddonEntry", "ResolvedStrategy", "StrategyEntry", "client_halves",
           "register", "register_addon", "resolve_strategy", "unregister"]

register(baselines.FEDAVG)
register(baselines.FEDPROX)
register(baselines.FEDPER)
register(baselines.LOCAL)
register(baselines.FEDBN)
register(baselines.FEDBABU)
register(baselines.FEDMEDIAN)
register(baselines.FEDTRIMMEDAVG)
register(baselines.KRUM)
register(fedpub.ENTRY)
register(fedloge.ENTRY)
register(fraug.ENTRY)
register(fednova.ENTRY)
register(fixmatch.ENTRY)
register(fedlabel.ENTRY)
register_addon(ggeur.ENTRY)
