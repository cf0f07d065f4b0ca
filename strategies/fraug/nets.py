"""FRAug's two small networks and its distances (spec fraug.md §2.2, §2.5).

Shapes: embeddings (B, d), labels (B,) int64, C classes, latent size l.

* generator G(z, y): concat(z (B, l), onehot(y) (B, C)) -> Linear(l + C, d) -> BN -> ReLU
  -> Linear(d, d) -> BN -> ReLU: a non-negative embedding, like the post-ReLU real ones;
* RTNet phi(v, y): concat(v (B, d), onehot(y)) -> Linear(d + C, l) -> BN -> ReLU ->
  Linear(l, d) -> BN: a residual added to a real anchor (an embedding or a prototype);
* MMD: Gaussian multi-kernel, 5 bandwidths b * 2^(i - 2), b the mean pairwise squared
  distance of the pooled samples.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

#: Prefix of the generator's keys in the messages (beside the classifier's).
GENERATOR = "generator."


class Generator(nn.Module):
    def __init__(self, latent_dim: int, num_classes: int, dim: int) -> None:
        super().__init__()
        self.latent_dim, self.num_classes = latent_dim, num_classes
        self.net = nn.Sequential(nn.Linear(latent_dim + num_classes, dim), nn.BatchNorm1d(dim), nn.ReLU(),
                                 nn.Linear(dim, dim), nn.BatchNorm1d(dim), nn.ReLU())

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([z, F.one_hot(y, self.num_classes).to(z.dtype)], dim=1))


class RTNet(nn.Module):
    def __init__(self, dim: int, num_classes: int, latent_dim: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.net = nn.Sequential(nn.Linear(dim + num_classes, latent_dim), nn.BatchNorm1d(latent_dim), nn.ReLU(),
                                 nn.Linear(latent_dim, dim), nn.BatchNorm1d(dim))

    def forward(self, v: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([v, F.one_hot(y, self.num_classes).to(v.dtype)], dim=1))


def generator_for(latent_dim: int, num_classes: int, dim: int, seed: int) -> Generator:
    """G with its initial weights drawn from ``seed`` (the same on the server and every client)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return Generator(latent_dim, num_classes, dim)


def mmd(x: torch.Tensor, y: torch.Tensor, kernels: int = 5, multiplier: float = 2.0) -> torch.Tensor:
    """Squared MMD between the samples x (n, d) and y (m, d), biased estimate."""
    pooled = torch.cat([x, y])
    distances = torch.cdist(pooled, pooled).pow(2)
    base = distances.detach().sum() / max(len(pooled) ** 2 - len(pooled), 1)
    base = base / multiplier ** (kernels // 2)
    kernel = sum(torch.exp(-distances / (base * multiplier ** i).clamp(min=1e-12)) for i in range(kernels))
    n = len(x)
    return kernel[:n, :n].mean() + kernel[n:, n:].mean() - 2 * kernel[:n, n:].mean()


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Mean prediction entropy of logits (B, C)."""
    log_p = logits.log_softmax(dim=1)
    return -(log_p.exp() * log_p).sum(dim=1).mean()


def nonsaturating_ce(logits: torch.Tensor, y: torch.Tensor, smoothing: float = 0.1) -> torch.Tensor:
    """The code's adversarial alternative: -log(1 - p_y) with label smoothing 0.1."""
    p = logits.softmax(dim=1)
    target = F.one_hot(y, logits.shape[1]).to(p.dtype) * (1 - smoothing) + smoothing / logits.shape[1]
    return -(target * torch.log((1 - p).clamp(min=1e-6))).sum(dim=1).mean()
