"""FixMatch (Sohn et al., NeurIPS 2020) on FedAvg: the semi-supervised baseline of
FedLabel's paper (FedAvg+FixMatch; FedProx+FixMatch with ``proximal_mu``)."""

from flowerbed.sims.datasets import IMAGE_DATASETS
from flowerbed.strategies.fixmatch.client import FixMatchClient
from flowerbed.strategies.fixmatch.params import FixMatchParams
from flowerbed.strategies.fixmatch.server import FixMatch
from flowerbed.strategies.registry import StrategyEntry

# The strong view is an image augmentation.
ENTRY = StrategyEntry("fixmatch", FixMatch, FixMatchParams, FixMatchClient(), datasets=IMAGE_DATASETS)
