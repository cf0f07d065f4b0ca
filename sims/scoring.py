"""Scoring a model on a scenario's data: loss, accuracy, predictions, accuracy per
class group and per domain. Shared by the ClientApp (personalized scores) and the
ServerApp (the global model), so neither imports the other's internals."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from flowerbed.sims.models import SplitModel


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


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 2048) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` on ``(x, y)``; (0, 0) when empty."""
    loss, accuracy, _ = score_many({"": model}, x, y, batch_size)[""]
    return loss, accuracy


@torch.no_grad()
def score_many(models: dict[str, nn.Module], x: torch.Tensor, y: torch.Tensor,
               batch_size: int = 2048) -> dict[str, tuple[float, float, torch.Tensor]]:
    """(loss, accuracy, predictions (N,)) of each model on ``(x, y)`` (eval mode, batches
    of ``batch_size``; (0, 0, empty) when empty). Models that are :class:`SplitModel`
    instances with the same body weights as the first run that body once a batch: a
    strategy's other heads on one body (FedLoGe's SSE-C and GLA-FR) cost a matmul, not a
    forward pass."""
    first = next(iter(models.values()))
    for model in models.values():
        model.eval()
    # One model alone gains nothing from sharing: skip the weight comparison.
    shared = {name for name, model in models.items() if _same_body(model, first)} if len(models) > 1 else set()
    loss_sum = dict.fromkeys(models, 0.0)
    correct = dict.fromkeys(models, 0)
    preds: dict[str, list[torch.Tensor]] = {name: [] for name in models}
    for start in range(0, len(x), batch_size):
        xb, target = x[start:start + batch_size], y[start:start + batch_size]
        features = first.body(xb) if shared else None
        for name, model in models.items():
            logits = model.head(features) if name in shared else model(xb)
            loss_sum[name] += float(F.cross_entropy(logits, target, reduction="sum"))
            correct[name] += int((logits.argmax(dim=1) == target).sum())
            preds[name].append(logits.argmax(1))
    n = max(len(x), 1)
    return {name: (loss_sum[name] / n, correct[name] / n,
                   torch.cat(preds[name]) if preds[name] else torch.empty(0, dtype=torch.long)) for name in models}


def _same_body(model: nn.Module, reference: nn.Module) -> bool:
    """A plain ``head(body(x))`` model whose body holds exactly ``reference``'s body weights."""
    if not (isinstance(model, SplitModel) and type(model).forward is SplitModel.forward
            and type(reference).forward is SplitModel.forward):
        return False
    mine, theirs = model.body.state_dict(), reference.body.state_dict()
    return mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)


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
        mask = torch.isin(y, torch.tensor(classes, dtype=y.dtype, device=y.device))
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
