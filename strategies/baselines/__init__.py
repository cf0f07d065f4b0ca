"""The classic baselines: FedAvg, FedProx (Flower's own), FedPer, local-only, FedBN, FedBABU; robust
aggregation: FedMedian, FedTrimmedAvg, Krum (Flower's own)."""

from flowerbed.strategies.baselines.client import (FedBABUClient, FedBNClient, FedPerClient, FedProxClient,
                                                   LocalOnlyClient)
from flowerbed.strategies.baselines.params import FedBABUParams, FedProxParams, FedTrimmedAvgParams, KrumParams
from flowerbed.strategies.baselines.server import (FedBABU, FedBN, FedPer, LocalOnly, fedavg, fedmedian, fedprox,
                                                   fedtrimmedavg, krum)
from flowerbed.strategies.registry import StrategyEntry

FEDAVG = StrategyEntry("fedavg", fedavg)
FEDPROX = StrategyEntry("fedprox", fedprox, FedProxParams, FedProxClient())
FEDPER = StrategyEntry("fedper", FedPer, client=FedPerClient())
LOCAL = StrategyEntry("local", LocalOnly, client=LocalOnlyClient())
FEDBN = StrategyEntry("fedbn", FedBN, client=FedBNClient())
FEDBABU = StrategyEntry("fedbabu", FedBABU, FedBABUParams, FedBABUClient())
FEDMEDIAN = StrategyEntry("fedmedian", fedmedian)
FEDTRIMMEDAVG = StrategyEntry("fedtrimmedavg", fedtrimmedavg, FedTrimmedAvgParams)
KRUM = StrategyEntry("krum", krum, KrumParams)
