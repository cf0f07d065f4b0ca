"""FED-PUB (Baek et al., ICML 2023): personalized subgraph FL on masked GNNs."""

from flowerbed.strategies.fedpub.client import FedPubClient
from flowerbed.strategies.fedpub.params import FedPubParams
from flowerbed.strategies.fedpub.server import FedPub
from flowerbed.strategies.registry import StrategyEntry

ENTRY = StrategyEntry("fedpub", FedPub, FedPubParams, FedPubClient(), models=("masked_gcn",))
