"""Local training loops (PyTorch, in-memory tensors): the bare training compute that
the ClientApp and the strategies' client halves wrap. Scoring, which the server shares,
is in :mod:`flowerbed.sims.scoring`."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from flowerbed.client.augment import weak


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
    # The weak view of each training image: a random horizontal flip (where flips keep
    # the class), then a random translation by up to this many pixels (0: none).
    translate_pixels: int = 0
    hflip: bool = False
    # Stop a round's local training after this many steps (None: all local_epochs).
    max_steps: int | None = None
    # An epoch's last batch, if smaller than this, joins the batch before it: BatchNorm
    # cannot normalise one sample in training mode (2 for models with BatchNorm).
    min_batch: int = 1

    @classmethod
    def from_scenario(cls, client, proximal_mu: float = 0.0, double_softmax: bool = False,
                      model: nn.Module | None = None) -> "TrainSettings":
        """The scenario's ``[client]`` settings; ``model`` (if given) sets ``min_batch``."""
        has_batchnorm = model is not None and any(isinstance(m, nn.modules.batchnorm._BatchNorm)
                                                  for m in model.modules())
        return cls(client.local_epochs, client.batch_size, client.lr, client.optimizer,
                   client.momentum, client.weight_decay, proximal_mu, double_softmax, client.translate_pixels,
                   client.hflip, client.max_local_steps, 2 if has_batchnorm else 1)


def batch_bounds(num: int, settings: TrainSettings) -> list[tuple[int, int]]:
    """(start, end) of an epoch's batches over ``num`` samples: ``batch_size`` each, a
    last one below ``min_batch`` merged into the one before."""
    starts = list(range(0, num, settings.batch_size))
    if len(starts) > 1 and num - starts[-1] < settings.min_batch:
        starts.pop()
    return list(zip(starts, [*starts[1:], num]))


def batches(x: torch.Tensor, y: torch.Tensor, settings: TrainSettings,
            generator: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One local epoch's minibatches of (x, y), shuffled and augmented by ``generator``
    (every training loop draws its batches here, so equal seeds give equal batches)."""
    order = torch.randperm(len(x), generator=generator).to(x.device)
    for start, end in batch_bounds(len(x), settings):
        idx = order[start:end]
        yield weak(x[idx], generator, settings.translate_pixels, settings.hflip), y[idx]


def round_batches(x: torch.Tensor, y: torch.Tensor, settings: TrainSettings,
                  generator: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """A round's minibatches: ``local_epochs`` epochs of :func:`batches`, cut after
    ``max_steps`` (:func:`round_steps` of them)."""
    epochs = itertools.chain.from_iterable(batches(x, y, settings, generator) for _ in range(settings.local_epochs))
    return itertools.islice(epochs, settings.max_steps)


def round_steps(num: int, settings: TrainSettings) -> int:
    """How many batches :func:`round_batches` gives for ``num`` samples."""
    steps = settings.local_epochs * len(batch_bounds(num, settings))
    return steps if settings.max_steps is None else min(steps, settings.max_steps)


def make_optimizer(params, settings: TrainSettings) -> torch.optim.Optimizer:
    if settings.optimizer == "adam":
        return torch.optim.Adam(params, lr=settings.lr, weight_decay=settings.weight_decay)
    return torch.optim.SGD(params, lr=settings.lr, momentum=settings.momentum,
                           weight_decay=settings.weight_decay)


class Proximal:
    """FedProx's term (mu / 2) * ||w - w_global||^2, anchored at the received weights."""

    def __init__(self, model: nn.Module, mu: float) -> None:
        self.mu = mu
        self.anchor = [p.detach().clone() for p in model.parameters()] if mu > 0 else None

    def __call__(self, model: nn.Module, loss: torch.Tensor) -> torch.Tensor:
        if self.anchor is None:
            return loss
        drift = sum((p - a).pow(2).sum() for p, a in zip(model.parameters(), self.anchor))
        return loss + 0.5 * self.mu * drift


def _step(model: nn.Module, optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> torch.Tensor:
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


class LossMean:
    """The mean of a run's batch losses, summed on the loss's device: no host sync per
    minibatch (``float(loss)`` waits for the GPU). Summed in float64 in batch order, the
    same additions ``sum(float(loss) ...)`` makes, so the mean is the same to the bit."""

    def __init__(self) -> None:
        self.total: torch.Tensor | float = 0.0
        self.count = 0

    def add(self, loss: torch.Tensor) -> None:
        self.total = self.total + loss.to(torch.float64)
        self.count += 1

    def mean(self) -> float:
        return float(self.total) / max(self.count, 1)


#: An extra loss term of the model (a strategy's regulariser), added to every step.
ExtraLoss = Callable[[nn.Module], torch.Tensor]


def train_local(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, settings: TrainSettings,
    generator: torch.Generator, optimizer: torch.optim.Optimizer | None = None,
    extra: ExtraLoss | None = None,
) -> float:
    """Run ``local_epochs`` of minibatch training in place (at most ``max_steps`` steps);
    returns the mean batch loss.

    ``x`` (N, *input_shape) float32, ``y`` (N,) int64. Batches are drawn by
    ``generator``, so the same seed gives the same updates.
    """
    model.train()
    optimizer = optimizer or make_optimizer(model.parameters(), settings)
    proximal = Proximal(model, settings.proximal_mu)
    losses = LossMean()
    for xb, yb in round_batches(x, y, settings, generator):
        logits = model(xb)
        if settings.double_softmax:
            logits = logits.softmax(dim=1)
        loss = proximal(model, F.cross_entropy(logits, yb))
        losses.add(_step(model, optimizer, loss + extra(model) if extra else loss))
    return losses.mean()


def train_graph(model: nn.Module, data, settings: TrainSettings,
                optimizer: torch.optim.Optimizer | None = None, extra: ExtraLoss | None = None) -> float:
    """Full-batch node classification: one optimizer step per local epoch on the
    training nodes of ``data`` (a GraphData); returns the mean loss."""
    model.train()
    optimizer = optimizer or make_optimizer(model.parameters(), settings)
    proximal = Proximal(model, settings.proximal_mu)
    losses = LossMean()
    for _ in range(settings.local_epochs):
        logits = model(data.x, data.edge_index)
        loss = proximal(model, F.cross_entropy(logits[data.train], data.y[data.train]))
        losses.add(_step(model, optimizer, loss + extra(model) if extra else loss))
    return losses.mean()


def fit(model: nn.Module, data, settings: TrainSettings, generator: torch.Generator,
        optimizer: torch.optim.Optimizer | None = None, extra: ExtraLoss | None = None) -> float:
    """Local training on a client's data (ClientData: labelled rows only; GraphData)."""
    if hasattr(data, "edge_index"):
        return train_graph(model, data, settings, optimizer, extra)
    return train_local(model, data.x_train, data.y_train, settings, generator, optimizer, extra)


def matches(name: str, patterns: tuple[str, ...]) -> bool:
    """Whether a parameter name contains one of ``patterns`` (``*`` matches all;
    ``=name`` matches that exact name)."""
    return any(p == "*" or (name == p[1:] if p.startswith("=") else p in name) for p in patterns)


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
