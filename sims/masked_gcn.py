"""FED-PUB's masked GCN: every weight matrix W is used as W * M, with M a real-valued
mask of W's shape that stays on its client (FED-PUB ``models/layers.py``, re-done
on plain torch ops: PyG's ``gcn_norm`` and an index-add, no torch_scatter).

Parameter names: each layer's mask is ``<layer>.mask``, so "mask" selects them all.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


def normalized_adjacency(edge_index: torch.Tensor, num_nodes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Kipf-Welling D^-1/2 (A + I) D^-1/2 as (edge_index (2, E'), weight (E',))."""
    from torch_geometric.nn.conv.gcn_conv import gcn_norm

    return gcn_norm(edge_index, None, num_nodes, add_self_loops=True)


def propagate(h: torch.Tensor, edge_index: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """out[dst] += weight * h[src]; h (N, D) -> (N, D)."""
    src, dst = edge_index
    return torch.zeros_like(h).index_add_(0, dst, h[src] * weight[:, None])


class MaskedLinear(nn.Module):
    """y = x (W * M~)^T + b; M~ = M, or in eval mode M with |M| < ``prune`` zeroed."""

    def __init__(self, fan_in: int, fan_out: int, prune: float = 1e-3) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(fan_out, fan_in))
        self.mask = nn.Parameter(torch.ones(fan_out, fan_in))
        self.bias = nn.Parameter(torch.zeros(fan_out))
        self.prune = prune
        nn.init.xavier_uniform_(self.weight)

    def effective_mask(self) -> torch.Tensor:
        if self.training:
            return self.mask
        return self.mask * (self.mask.abs() >= self.prune)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.effective_mask(), self.bias)


class MaskedGCNConv(MaskedLinear):
    """H_out = A_hat H_in (W * M~)^T + b (glorot weight, zero bias)."""

    def forward(self, x: torch.Tensor, adjacency: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:  # type: ignore[override]
        h = x @ (self.weight * self.effective_mask()).t()
        return propagate(h, *adjacency) + self.bias


class MaskedGCN(nn.Module):
    """conv1 (F -> hidden) -> ReLU -> dropout -> conv2 (hidden -> hidden) = embedding ->
    ReLU -> dropout -> masked linear classifier (hidden -> C).

    ``forward(x, edge_index)``: x (N, F), edge_index (2, E) -> logits (N, C).
    """

    def __init__(self, num_features: int, num_classes: int, hidden: int = 128, dropout: float = 0.5,
                 prune: float = 1e-3) -> None:
        super().__init__()
        self.conv1 = MaskedGCNConv(num_features, hidden, prune)
        self.conv2 = MaskedGCNConv(hidden, hidden, prune)
        self.head = MaskedLinear(hidden, num_classes, prune)
        self.dropout = dropout
        bound = math.sqrt(6.0 / (hidden + num_classes))
        nn.init.uniform_(self.head.weight, -bound, bound)

    def _drop(self, t: torch.Tensor) -> torch.Tensor:
        return F.dropout(t, self.dropout, self.training)

    def embed(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        """conv2's output before its ReLU (N, hidden): FED-PUB's functional embedding."""
        adjacency = normalized_adjacency(edge_index, x.shape[0])
        return self.conv2(self._drop(torch.relu(self.conv1(x, adjacency))), adjacency)

    def body(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        return self._drop(torch.relu(self.embed(x, edge_index)))

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x, edge_index))

    def masks(self) -> list[nn.Parameter]:
        return [self.conv1.mask, self.conv2.mask, self.head.mask]

    def set_prune(self, threshold: float) -> None:
        for layer in (self.conv1, self.conv2, self.head):
            layer.prune = threshold
