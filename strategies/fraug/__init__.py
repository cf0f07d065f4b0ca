"""FRAug (Chen et al., ICCV 2023): a shared class-conditional generator and local
RTNets augment each client's embeddings, on top of FedBN."""

from flowerbed.strategies.fraug.client import FRAugClient
from flowerbed.strategies.fraug.params import FRAugParams
from flowerbed.strategies.fraug.server import FRAug
from flowerbed.strategies.registry import StrategyEntry

ENTRY = StrategyEntry("fraug", FRAug, FRAugParams, FRAugClient(), models=("cnn_bn", "mlp_bn"))
