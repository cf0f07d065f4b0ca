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


#: name -> builder(input_shape, num_classes, hidden). New models join with one line.
MODELS: dict[str, Callable[[tuple[int, ...], int, int], SplitModel]] = {
    "mlp": _mlp,
    "logreg": _logreg,
    "cnn": _cnn,
}


def build_model(name: str, input_shape: tuple[int, ...], num_classes: int, hidden: int = 64) -> SplitModel:
    return MODELS[name](tuple(input_shape), num_classes, hidden)
