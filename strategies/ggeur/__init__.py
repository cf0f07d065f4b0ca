"""GGEUR (Ma et al., CVPR 2025): geometry-guided embedding augmentation, an add-on
that composes with FedAvg-style strategies."""

from flowerbed.strategies.ggeur.client import GGEURClient
from flowerbed.strategies.ggeur.params import GGEUR_MODELS, GGEURParams
from flowerbed.strategies.ggeur.server import GGEUR
from flowerbed.strategies.registry import AddonEntry

ENTRY = AddonEntry("ggeur", GGEUR, GGEURParams, GGEURClient(), models=GGEUR_MODELS,
                   composes_with=("fedavg", "fedprox", "local", "fedper", "fedbabu"))
