"""Models named in scenario files.

Every model splits into a ``body`` (feature extractor) and a ``head`` (the last
linear layer), so personalized strategies (FedPer, FedRep, FedLoGe) can share one
and keep the other on the client.
"""

from __future__ import annotations

from collections.abc import Callable
from math import prod

import torch
from torch import nn

from flowerbed.sims.base import GRAPH_MODELS, MODEL_NAMES  # noqa: F401 - GRAPH_MODELS: re-exported


class SplitModel(nn.Module):
    """``head(body(x))``; input (B, *input_shape), output logits (B, num_classes)."""

    def __init__(self, body: nn.Module, head: nn.Linear) -> None:
        super().__init__()
        self.body = body
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def _mlp(input_shape: tuple[int, ...], num_classes: int, hidden: int) -> SplitModel:
    body = nn.Sequential(nn.Flatten(), nn.Linear(prod(input_shape), hidden), nn.ReLU())
    return SplitModel(body, nn.Linear(hidden, num_classes))


def _mlp2(input_shape: tuple[int, ...], num_classes: int, hidden: int) -> SplitModel:
    """Two hidden layers, 2*hidden then hidden wide (784-256-128 with hidden = 128)."""
    body = nn.Sequential(nn.Flatten(), nn.Linear(prod(input_shape), 2 * hidden), nn.ReLU(),
                         nn.Linear(2 * hidden, hidden), nn.ReLU())
    return SplitModel(body, nn.Linear(hidden, num_classes))


def _logreg(input_shape: tuple[int, ...], num_classes: int, hidden: int) -> SplitModel:
    return SplitModel(nn.Flatten(), nn.Linear(prod(input_shape), num_classes))


def _cnn(input_shape: tuple[int, ...], num_classes: int, hidden: int) -> SplitModel:
    """Two conv blocks then a hidden layer; sized for 28x28 (or 8x8) grey images."""
    channels, height, width = input_shape
    body = nn.Sequential(
        nn.Conv2d(channels, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * (height // 4) * (width // 4), hidden), nn.ReLU(),
    )
    return SplitModel(body, nn.Linear(hidden, num_classes))


def _cnn_bn(input_shape: tuple[int, ...], num_classes: int, hidden: int) -> SplitModel:
    """FRAug's digits CNN (spec fraug.md §9.1): Conv3x3(32)-BN-ReLU-MaxPool,
    Conv3x3(64)-BN-ReLU-MaxPool, FC hidden-BN-ReLU (the embedding u), linear head."""
    channels, height, width = input_shape
    body = nn.Sequential(
        nn.Conv2d(channels, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * (height // 4) * (width // 4), hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
    )
    return SplitModel(body, nn.Linear(hidden, num_classes))


def _mlp_bn(input_shape: tuple[int, ...], num_classes: int, hidden: int) -> SplitModel:
    """FRAug's feature MLP (spec fraug.md §9.2, §9.3): in -> 256 -> BN -> ReLU -> hidden ->
    BN -> ReLU (the embedding u), linear head."""
    body = nn.Sequential(nn.Flatten(), nn.Linear(prod(input_shape), 256), nn.BatchNorm1d(256), nn.ReLU(),
                         nn.Linear(256, hidden), nn.BatchNorm1d(hidden), nn.ReLU())
    return SplitModel(body, nn.Linear(hidden, num_classes))


class GraphSplitModel(nn.Module):
    """A 2-layer GCN body and a linear head for node classification.

    ``forward(x, edge_index)``: x (N, F), edge_index (2, E) -> logits (N, num_classes).
    PyG's ``GCNConv`` runs on plain torch ops (no torch_scatter / torch_sparse).
    """

    def __init__(self, num_features: int, num_classes: int, hidden: int, dropout: float = 0.5) -> None:
        super().__init__()
        from torch_geometric.nn import GCNConv

        self.conv1 = GCNConv(num_features, hidden)
        self.conv2 = GCNConv(hidden, hidden)
        self.dropout = dropout
        self.head = nn.Linear(hidden, num_classes)

    def body(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        """Node embeddings (N, hidden)."""
        drop = lambda t: nn.functional.dropout(t, self.dropout, self.training)  # noqa: E731
        h = drop(torch.relu(self.conv1(x, edge_index)))
        return drop(torch.relu(self.conv2(h, edge_index)))

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x, edge_index))


    def embed(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        """conv2's output before its ReLU (N, hidden): FED-PUB's functional embedding."""
        drop = lambda t: nn.functional.dropout(t, self.dropout, self.training)  # noqa: E731
        return self.conv2(drop(torch.relu(self.conv1(x, edge_index))), edge_index)


def _gcn(input_shape: tuple[int, ...], num_classes: int, hidden: int) -> GraphSplitModel:
    return GraphSplitModel(input_shape[0], num_classes, hidden)


def _masked_gcn(input_shape: tuple[int, ...], num_classes: int, hidden: int) -> nn.Module:
    from flowerbed.sims.masked_gcn import MaskedGCN

    return MaskedGCN(input_shape[0], num_classes, hidden)


#: name -> builder(input_shape, num_classes, hidden). New models join with one line.
#: The ``*_bn`` models carry BatchNorm (FedBN keeps it local; FedAvg averages it).
MODELS: dict[str, Callable[[tuple[int, ...], int, int], nn.Module]] = {
    "mlp": _mlp,
    "mlp2": _mlp2,
    "logreg": _logreg,
    "cnn": _cnn,
    "cnn_bn": _cnn_bn,
    "mlp_bn": _mlp_bn,
    "gcn": _gcn,
    "masked_gcn": _masked_gcn,
}
assert tuple(MODELS) == MODEL_NAMES, "sims.base.MODEL_NAMES lists the models a config accepts"


def build_model(name: str, input_shape: tuple[int, ...], num_classes: int, hidden: int = 64) -> nn.Module:
    return MODELS[name](tuple(input_shape), num_classes, hidden)


def batchnorm_keys(model: nn.Module) -> tuple[str, ...]:
    """State-dict keys of every BatchNorm layer (affine parameters and running
    statistics), found by module type, not by name."""
    return tuple(f"{prefix}.{key}" if prefix else key
                 for prefix, module in model.named_modules() if isinstance(module, nn.modules.batchnorm._BatchNorm)
                 for key in module.state_dict())
