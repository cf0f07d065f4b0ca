"""FedNova (Wang et al., NeurIPS 2020): normalised averaging; the worked example of the
strategy contract (strategies/README.md)."""

from flowerbed.strategies.fednova.client import FedNovaClient
from flowerbed.strategies.fednova.server import FedNova
from flowerbed.strategies.registry import StrategyEntry

ENTRY = StrategyEntry("fednova", FedNova, client=FedNovaClient())
