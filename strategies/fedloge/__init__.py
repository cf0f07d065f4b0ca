"""FedLoGe (Xiao et al., ICLR 2024): sparse ETF classifier, global and local heads, GLA-FR."""

from flowerbed.strategies.fedloge.client import FedLoGeClient
from flowerbed.strategies.fedloge.params import FedLoGeParams
from flowerbed.strategies.fedloge.server import FedLoGe
from flowerbed.strategies.registry import StrategyEntry

ENTRY = StrategyEntry("fedloge", FedLoGe, FedLoGeParams, FedLoGeClient(), models=("mlp", "mlp2", "mlp_bn", "cnn", "cnn_bn"))
