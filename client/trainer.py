"""Local training and evaluation loops (PyTorch, in-memory tensors).

These are the bare training compute: the ClientApp wraps them with Flower messages
and the server uses :func:`evaluate` for the global model.
"""

from __future__ import annotations

from collections.abc import Callable
import dataclasses
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
    # Cross-entropy applied to softmax outputs instead of logits (GGEUR's official loop).
    double_softmax: bool = False

    @classmethod
    def from_scenario(cls, client, proximal_mu: float = 0.0, double_softmax: bool = False) -> "TrainSettings":
        return cls(client.local_epochs, client.batch_size, client.lr, client.optimizer,
                   client.momentum, client.weight_decay, proximal_mu, double_softmax)


def make_optimizer(params, settings: TrainSettings) -> torch.optim.Optimizer:
    if settings.optimizer == "adam":
        return torch.optim.Adam(params, lr=settings.lr, weight_decay=settings.weight_decay)
    return torch.optim.SGD(params, lr=settings.lr, momentum=settings.momentum,
                           weight_decay=settings.weight_decay)


class _Proximal:
    """FedProx's term (mu / 2) * ||w - w_global||^2, anchored at the received weights."""

    def __init__(self, model: nn.Module, mu: float) -> None:
        self.mu = mu
        self.anchor = [p.detach().clone() for p in model.parameters()] if mu > 0 else None

    def __call__(self, model: nn.Module, loss: torch.Tensor) -> torch.Tensor:
        if self.anchor is None:
            return loss
        drift = sum((p - a).pow(2).sum() for p, a in zip(model.parameters(), self.anchor))
        return loss + 0.5 * self.mu * drift


def _step(model: nn.Module, optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> float:
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


#: An extra loss term of the model (a strategy's regulariser), added to every step.
ExtraLoss = Callable[[nn.Module], torch.Tensor]


def train_local(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, settings: TrainSettings,
    generator: torch.Generator, optimizer: torch.optim.Optimizer | None = None,
    extra: ExtraLoss | None = None,
) -> float:
    """Run ``local_epochs`` of minibatch training in place; returns the mean batch loss.

    ``x`` (N, *input_shape) float32, ``y`` (N,) int64. Batches are drawn by
    ``generator``, so the same seed gives the same updates.
    """
    model.train()
    optimizer = optimizer or make_optimizer(model.parameters(), settings)
    proximal = _Proximal(model, settings.proximal_mu)
    losses = []
    for _ in range(settings.local_epochs):
        order = torch.randperm(len(x), generator=generator).to(x.device)
        for start in range(0, len(x), settings.batch_size):
            idx = order[start:start + settings.batch_size]
            logits = model(x[idx])
            if settings.double_softmax:
                logits = logits.softmax(dim=1)
            loss = proximal(model, F.cross_entropy(logits, y[idx]))
            losses.append(_step(model, optimizer, loss + extra(model) if extra else loss))
    return sum(losses) / max(len(losses), 1)


def train_graph(model: nn.Module, data, settings: TrainSettings,
                optimizer: torch.optim.Optimizer | None = None, extra: ExtraLoss | None = None) -> float:
    """Full-batch node classification: one optimizer step per local epoch on the
    training nodes of ``data`` (a GraphData); returns the mean loss."""
    model.train()
    optimizer = optimizer or make_optimizer(model.parameters(), settings)
    proximal = _Proximal(model, settings.proximal_mu)
    losses = []
    for _ in range(settings.local_epochs):
        logits = model(data.x, data.edge_index)
        loss = proximal(model, F.cross_entropy(logits[data.train], data.y[data.train]))
        losses.append(_step(model, optimizer, loss + extra(model) if extra else loss))
    return sum(losses) / max(len(losses), 1)


def fit(model: nn.Module, data, settings: TrainSettings, generator: torch.Generator,
        optimizer: torch.optim.Optimizer | None = None, extra: ExtraLoss | None = None) -> float:
    """Local training on a client's data (ClientData: labelled rows only; GraphData)."""
    if hasattr(data, "edge_index"):
        return train_graph(model, data, settings, optimizer, extra)
    return train_local(model, data.x_train, data.y_train, settings, generator, optimizer, extra)


def matches(name: str, patterns: tuple[str, ...]) -> bool:
    """Whether a parameter name contains one of ``patterns`` (``*`` matches all)."""
    return any(p == "*" or p in name for p in patterns)


def finetune(model: nn.Module, data, settings: TrainSettings, patterns: tuple[str, ...], epochs: int,
             generator: torch.Generator) -> nn.Module:
    """A copy of ``model`` whose parameters matching ``patterns`` (name fragments) were
    trained ``epochs`` epochs on the client's labelled data, the rest frozen (FedBABU)."""
    import copy

    tuned = copy.deepcopy(model)
    trainable = [p for n, p in tuned.named_parameters() if matches(n, patterns)]
    if epochs > 0 and trainable:
        fit(tuned, data, dataclasses.replace(settings, local_epochs=epochs), generator,
            make_optimizer(trainable, settings))
    return tuned


def score(model: nn.Module, data, mask: str = "test") -> tuple[float, float]:
    """Loss and accuracy on a client's (or the global) test data."""
    if hasattr(data, "edge_index"):
        return evaluate_graph(model, data, getattr(data, mask))
    return evaluate(model, data.x_test, data.y_test)


@torch.no_grad()
def evaluate_graph(model: nn.Module, data, mask: torch.Tensor) -> tuple[float, float]:
    """Mean cross-entropy and accuracy on the nodes in ``mask``; (0, 0) when empty."""
    if not bool(mask.any()):
        return 0.0, 0.0
    model.eval()
    logits = model(data.x, data.edge_index)[mask]
    target = data.y[mask]
    return float(F.cross_entropy(logits, target)), float((logits.argmax(1) == target).float().mean())


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


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 2048) -> torch.Tensor:
    """Predicted classes (N,) for array inputs ``x`` (N, *input_shape)."""
    model.eval()
    return torch.cat([model(x[i:i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)])


def group_accuracies(pred: torch.Tensor, y: torch.Tensor, groups: dict[str, list[int]]) -> dict[str, float]:
    """Accuracy on the samples of each class group (FedLoGe's head / middle / tail);
    groups without a sample are left out."""
    out = {}
    for name, classes in groups.items():
        mask = torch.isin(y, torch.tensor(classes, dtype=y.dtype))
        if bool(mask.any()):
            out[name] = float((pred[mask] == y[mask]).float().mean())
    return out


def domain_accuracies(pred: torch.Tensor, y: torch.Tensor, domain_rows: dict[str, torch.Tensor]) -> dict[str, float]:
    """Accuracy on each domain's rows of a test set and ``domain_mean``, their unweighted
    mean (the multi-domain metric of GGEUR and FRAug); empty domains are left out."""
    out = {d: float((pred[rows] == y[rows]).float().mean()) for d, rows in domain_rows.items() if len(rows)}
    if out:
        out["domain_mean"] = sum(out.values()) / len(out)
    return out
