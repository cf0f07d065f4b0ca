"""FedLabel (Cho et al., ICCV 2023): per unlabelled sample, the more confident of the
local and the global model labels it, plus a global-local consistency term."""

from flowerbed.sims.datasets import IMAGE_DATASETS
from flowerbed.strategies.fedlabel.client import FedLabelClient
from flowerbed.strategies.fedlabel.params import FedLabelParams
from flowerbed.strategies.fedlabel.server import FedLabel
from flowerbed.strategies.registry import StrategyEntry

ENTRY = StrategyEntry("fedlabel", FedLabel, FedLabelParams, FedLabelClient(), datasets=IMAGE_DATASETS)
