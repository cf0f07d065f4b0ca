"""FED-PUB's maths: the similarity weights the server computes from the clients'
functional embeddings, and what each client computes them from (the shared random
proxy graph, the embedding) and its regularisers.

Objective of client i (paper, eq. in §2.2 of the spec)::

    L_i = CE(train nodes) + lambda1 * sum_l ||M_l||_1 + lambda2 * sum_p ||theta_p - theta_bar_p||_2

with masks M (local), non-mask weights theta and the received personalized model
theta_bar. ``regularizers = "paper"`` makes both terms act; ``"code_noop"`` computes
them on detached tensors as the official code does, so they move the reported loss
and nothing else. The L1 term acts either in the loss (``mask_l1_form = "loss"``) or
as the proximal step after each optimizer step (``"decoupled"``, :func:`soft_threshold_`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

def similarity(embeddings: np.ndarray) -> np.ndarray:
    """Cosine similarity S (K, K) of the rows of ``embeddings`` (K, D)."""
    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
    unit = embeddings / np.maximum(norms, 1e-12)
    return unit @ unit.T


def aggregation_weights(embeddings: np.ndarray, tau: float, agg_norm: str = "exp") -> np.ndarray:
    """alpha (K, K), row-stochastic: exp(tau * S_ij) / sum_k exp(tau * S_ik), or S normalised."""
    s = similarity(embeddings)
    if agg_norm == "cosine":
        return s / s.sum(axis=1, keepdims=True)
    logits = tau * s
    w = np.exp(logits - logits.max(axis=1, keepdims=True))  # the same ratios, no overflow
    return w / w.sum(axis=1, keepdims=True)


PROXY_BLOCKS, PROXY_BLOCK_SIZE, PROXY_P_IN = 5, 100, 0.1


@functools.lru_cache(maxsize=4)
def proxy_graph(seed: int, num_features: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The proxy graph: ``networkx.random_partition_graph([100] * 5, 0.1, 0, seed)``
    (5 disconnected G(100, 0.1) blocks) with N(0, 1) features drawn from ``seed``.
    Returns x (500, num_features) and edge_index (2, E), both directions."""
    import networkx as nx

    graph = nx.random_partition_graph([PROXY_BLOCK_SIZE] * PROXY_BLOCKS, PROXY_P_IN, 0.0, seed=seed)
    edges = np.array(sorted(graph.edges()), dtype=np.int64).reshape(-1, 2).T
    edge_index = torch.from_numpy(np.concatenate([edges, edges[::-1]], axis=1).copy())
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(graph.number_of_nodes(), num_features, generator=generator)
    return x, edge_index


@torch.no_grad()
def functional_embedding(model: nn.Module, seed: int, num_features: int) -> list[float]:
    """Mean over the proxy nodes of the model's embedding (eval mode: no dropout,
    pruned masks): h_i in R^hidden."""
    x, edge_index = proxy_graph(seed, num_features)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    h = model.embed(x.to(device), edge_index.to(device)).mean(dim=0)
    model.train(was_training)
    return h.cpu().tolist()


def penalty(model: nn.Module, anchor: dict[str, torch.Tensor], mask_l1: float, prox_l2: float,
            mode: str, with_proximal: bool) -> Callable[[nn.Module], torch.Tensor]:
    """The regularisers as a loss term; ``anchor``: the received (personalized) weights."""

    def term(m: nn.Module) -> torch.Tensor:
        params = dict(m.named_parameters())
        if mode == "code_noop":
            params = {k: v.detach() for k, v in params.items()}
        masks = [v for k, v in params.items() if "mask" in k]
        total = mask_l1 * sum(v.abs().sum() for v in masks) if masks else torch.zeros(())
        if with_proximal:
            total = total + prox_l2 * sum(torch.linalg.vector_norm(v - anchor[k].to(v.device))
                                          for k, v in params.items() if "mask" not in k and k in anchor)
        return total

    return term


@torch.no_grad()
def soft_threshold_(masks: list[torch.Tensor], amount: float) -> None:
    """M <- sign(M) * max(|M| - amount, 0) in place: the proximal operator of
    amount * ||M||_1 (one ISTA step of the L1 term, with amount = lr * lambda1)."""
    for m in masks:
        m.copy_(m.sign() * (m.abs() - amount).clamp_min(0))


def mask_sparsity(model: nn.Module, threshold: float) -> float:
    """Share of mask entries with |M| < threshold (what eval-mode pruning removes)."""
    masks = [p.detach() for name, p in model.named_parameters() if "mask" in name]
    if not masks:
        return 0.0
    return float(sum((m.abs() < threshold).sum() for m in masks) / sum(m.numel() for m in masks))
