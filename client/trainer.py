"""Local training and evaluation loops (PyTorch, in-memory tensors).

These are the bare training compute: the ClientApp wraps them with Flower messages
and the server uses :func:`evaluate` for the global model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F


@dataclass(frozen=True)
class TrainSettings:
    local_epochs: int
    batch_size: int
    lr: float
    optimizer: str = "sgd"
    momentum: float = 0.0
    weight_decay: float = 0.0
    # FedProx's mu: adds (mu / 2) * ||w - w_global||^2 to the loss (Li et al., 2020, eq. 2).
    proximal_mu: float = 0.0

    @classmethod
    def from_scenario(cls, client, proximal_mu: float = 0.0) -> "TrainSettings":
        return cls(client.local_epochs, client.batch_size, client.lr, client.optimizer,
                   client.momentum, client.weight_decay, proximal_mu)


def make_optimizer(params, settings: TrainSettings) -> torch.optim.Optimizer:
    if settings.optimizer == "adam":
        return torch.optim.Adam(params, lr=settings.lr, weight_decay=settings.weight_decay)
    return torch.optim.SGD(params, lr=settings.lr, momentum=settings.momentum,
                           weight_decay=settings.weight_decay)


def train_local(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, settings: TrainSettings,
    generator: torch.Generator,
) -> float:
    """Run ``local_epochs`` of minibatch training in place; returns the mean batch loss.

    ``x`` (N, *input_shape) float32, ``y`` (N,) int64. Batches are drawn by
    ``generator``, so the same seed gives the same updates.
    """
    model.train()
    optimizer = make_optimizer(model.parameters(), settings)
    anchor = ([p.detach().clone() for p in model.parameters()]
              if settings.proximal_mu > 0 else None)
    total, batches = 0.0, 0
    for _ in range(settings.local_epochs):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), settings.batch_size):
            idx = order[start:start + settings.batch_size]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            if anchor is not None:
                drift = sum((p - a).pow(2).sum() for p, a in zip(model.parameters(), anchor))
                loss = loss + 0.5 * settings.proximal_mu * drift
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach())
            batches += 1
    return total / max(batches, 1)


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 2048) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` on ``(x, y)``; (0, 0) when empty."""
    if len(x) == 0:
        return 0.0, 0.0
    model.eval()
    loss_sum, correct = 0.0, 0
    for start in range(0, len(x), batch_size):
        logits = model(x[start:start + batch_size])
        target = y[start:start + batch_size]
        loss_sum += float(F.cross_entropy(logits, target, reduction="sum"))
        correct += int((logits.argmax(dim=1) == target).sum())
    return loss_sum / len(x), correct / len(x)
