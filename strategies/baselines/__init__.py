"""The classic baselines: FedAvg, FedProx (Flower's own), FedPer, local-only, FedBN, FedBABU."""

from flowerbed.strategies.baselines.client import (FedBABUClient, FedBNClient, FedPerClient, FedProxClient,
                                                   LocalOnlyClient)
from flowerbed.strategies.baselines.params import FedBABUParams, FedProxParams
from flowerbed.strategies.baselines.server import FedBABU, FedBN, FedPer, LocalOnly, fedavg, fedprox
from flowerbed.strategies.registry import StrategyEntry

FEDAVG = StrategyEntry("fedavg", fedavg)
FEDPROX = StrategyEntry("fedprox", fedprox, FedProxParams, FedProxClient())
FEDPER = StrategyEntry("fedper", FedPer, client=FedPerClient())
LOCAL = StrategyEntry("local", LocalOnly, client=LocalOnlyClient())
FEDBN = StrategyEntry("fedbn", FedBN, client=FedBNClient())
FEDBABU = StrategyEntry("fedbabu", FedBABU, FedBABUParams, FedBABUClient())
