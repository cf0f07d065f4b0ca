"""FedLoGe's head algebra, shared by both halves (Xiao et al., ICLR 2024,
https://arxiv.org/abs/2401.08977; official code ZackZikaiXiao/FedLoGe).

* SSE-C: a sparse simplex ETF, built from a seed identically on the server and on
  every client, frozen; the only head whose loss trains the backbone::

      M = sqrt(C / (C - 1)) * P (I - 11^T / C),   P^T P = I   (d x C, columns unit norm,
                                                               pairwise cosine -1/(C-1))
      zero a random fraction beta of M's entries; refine the rest (Adam, lr 1e-4) on
      sum_c (||m_c|| - norm)^2 - mean_c arccos(max_{c' != c} cos(m_c, m_c'))

* per batch: (a) CE(SSE-C(z)) steps the backbone; (b) CE(psi(z.detach())) steps the
  global auxiliary head psi; (c) CE(phi_k(z.detach())) steps the local head phi_k;
  three SGD optimizers, re-created every round.
* GLA-FR (training-free): generic psi~_c = s * psi_c / ||psi_c||; personalized
  psi^_c = u(psi_c) * ||phi_k,c|| with u = psi_c / ||psi_c|| (``norm_transfer =
  "unit"``, the paper's reading) or u = psi_c (``"code"``), logits psi^ z + b_psi +
  phi_k z + b_phi.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from flowerbed.client.trainer import LossMean, TrainSettings, round_batches


@functools.lru_cache(maxsize=4)
def sparse_etf(dim: int, num_classes: int, beta: float = 0.6, norm: float = 0.1,
               steps: int = 10_000, seed: int = 0) -> torch.Tensor:
    """SSE-C's weight (C, d), float32, deterministic in ``seed`` (built in float64 on CPU)."""
    if dim < num_classes - 1:
        raise ValueError(f"an ETF of {num_classes} classes needs a feature size >= {num_classes - 1}, got {dim}")
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.random((dim, num_classes)))
    c = num_classes
    etf = np.sqrt(c / (c - 1)) * basis @ (np.eye(c) - np.ones((c, c)) / c)
    keep = np.ones(dim * c)
    keep[rng.choice(dim * c, size=int(round(beta * dim * c)), replace=False)] = 0.0
    keep = torch.from_numpy(keep.reshape(dim, c))
    m = torch.from_numpy(etf * keep.numpy()).requires_grad_(True)
    if steps:
        optimizer = torch.optim.Adam([m], lr=1e-4)
        for _ in range(steps):
            optimizer.zero_grad()
            etf_loss(m, norm).backward()
            m.grad.mul_(keep)  # the zero pattern holds
            optimizer.step()
    return m.detach().t().contiguous().float()


def etf_loss(m: torch.Tensor, norm: float) -> torch.Tensor:
    """sum_c (||m_c|| - norm)^2 - mean_c arccos(max_{c' != c} cos(m_c, m_c')); m (d, C)."""
    norms = m.norm(dim=0)
    cos = (m.t() @ m) / (norms[:, None] * norms[None, :])
    cos = cos.clamp(-0.99999, 0.99999).fill_diagonal_(-1.0)
    return ((norms - norm) ** 2).sum() - torch.arccos(cos.max(dim=1).values).mean()


def sse_c_head(weight: torch.Tensor, bias: str = "zero", seed: int = 0) -> nn.Linear:
    """A frozen Linear with the ETF weight; bias zero, or nn.Linear's random init (the code's)."""
    num_classes, dim = weight.shape
    head = nn.Linear(dim, num_classes)
    with torch.no_grad():
        head.weight.copy_(weight)
        if bias == "zero":
            head.bias.zero_()
        else:
            bound = 1 / np.sqrt(dim)
            head.bias.copy_(torch.empty(num_classes).uniform_(-bound, bound, generator=torch.Generator().manual_seed(seed)))
    head.requires_grad_(False)
    return head


def train_three_heads(body: nn.Module, psi: nn.Linear, phi: nn.Linear, sse_c: nn.Linear,
                      x: torch.Tensor, y: torch.Tensor, settings: TrainSettings, generator: torch.Generator) -> float:
    """FedLoGe's local update (SGD at ``settings``' lr and momentum); returns the mean
    SSE-C loss. Only (a) reaches the body."""
    body.train()
    optimizers = [torch.optim.SGD(p.parameters(), lr=settings.lr, momentum=settings.momentum)
                  for p in (body, psi, phi)]
    losses = LossMean()
    for xb, yb in round_batches(x, y, settings, generator):
        z = body(xb)
        for optimizer, loss in zip(optimizers, (F.cross_entropy(sse_c(z), yb),
                                                F.cross_entropy(psi(z.detach()), yb),
                                                F.cross_entropy(phi(z.detach()), yb))):
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if optimizer is optimizers[0]:
                losses.add(loss.detach())
    return losses.mean()


@torch.no_grad()
def feature_diagnostics(body: nn.Module, sse_c: nn.Linear, x: torch.Tensor, limit: int = 1024) -> dict[str, float]:
    """On up to ``limit`` training samples, eval mode: the mean feature norm ||f_theta(x)||
    and the mean largest softmax probability of the SSE-C's logits. The SSE-C's class
    vectors have norm ``etf_norm``, so its logit margins are ~ etf_norm * ||z||: with a
    small norm the logits stay near uniform until the features grow."""
    was_training = body.training
    body.eval()
    z = body(x[:limit])
    body.train(was_training)
    return {"personalized_fedloge_feature_norm": float(z.norm(dim=1).mean()),
            "personalized_fedloge_ssec_max_prob": float(F.softmax(sse_c(z), dim=1).max(dim=1).values.mean())}


def realign_global(psi_weight: torch.Tensor, scale: float = 1.7) -> torch.Tensor:
    """GLA-FR, generic model: every class vector of psi (C, d) rescaled to norm ``scale``."""
    return scale * psi_weight / psi_weight.norm(dim=1, keepdim=True).clamp(min=1e-12)


def realign_local(psi_weight: torch.Tensor, phi_weight: torch.Tensor, norm_transfer: str = "unit") -> torch.Tensor:
    """GLA-FR, personalized: psi's class vectors (unit directions, or as they are for
    ``"code"``) scaled by the norms of the client's local head's class vectors."""
    direction = psi_weight if norm_transfer == "code" else realign_global(psi_weight, 1.0)
    return direction * phi_weight.norm(dim=1, keepdim=True)


def personalized_logits(z: torch.Tensor, psi: nn.Linear, phi: nn.Linear, norm_transfer: str | None,
                        absent: torch.Tensor | None = None) -> torch.Tensor:
    """psi^ z + b_psi + phi z + b_phi (no transfer when ``norm_transfer`` is None: psi as
    trained); classes in ``absent`` (bool (C,)) get -inf when the test-time mask is on."""
    weight = psi.weight if norm_transfer is None else realign_local(psi.weight, phi.weight, norm_transfer)
    logits = F.linear(z, weight, psi.bias) + phi(z)
    if absent is not None:
        logits = logits.masked_fill(absent[None, :], float("-inf"))
    return logits


def sse_c_of(params, dim: int, num_classes: int) -> nn.Linear:
    """The run's SSE-C from FedLoGe's parameters (``params.etf_seed`` resolved), the
    same on the server and on every client (cached)."""
    weight = sparse_etf(dim, num_classes, params.beta, params.etf_norm, params.etf_steps, params.etf_seed)
    return sse_c_head(weight, params.sse_c_bias, params.etf_seed)
