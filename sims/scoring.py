"""Scoring a model on a scenario's data: loss, accuracy, predictions, accuracy per
class group and per domain. Shared by the ClientApp (personalized scores) and the
ServerApp (the global model), so neither imports the other's internals."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


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
