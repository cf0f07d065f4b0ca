"""Graphs for subgraph FL (FED-PUB): Cora / CiteSeer through PyG, and METIS subgraphs.

Preprocessing follows FED-PUB's generator (``data/generators/utils.py``): keep the
largest connected component, row-normalise features, then one seeded node split of
the whole graph (20% train, 40% test, the rest validation) that each client inherits.
Partitions: METIS (``pymetis``) into K parts with only intra-part edges kept
(disjoint), or into M communities each sampled by several clients at half its nodes
(overlapping).
"""

from __future__ import annotations

import functools
import shutil
from pathlib import Path

import numpy as np
import torch
from torch_geometric.data import Data
from torch_geometric.utils import subgraph, to_undirected

from flowerbed.sims.cache import writable_cache
from flowerbed.sims.base import DatasetMissing, GraphDataset

#: FED-PUB's data-generation seed: the node split is fixed across runs.
NODE_SPLIT_SEED = 1234
PLANETOID = {"cora": "Cora", "citeseer": "CiteSeer"}


def largest_component(data: Data) -> Data:
    """The induced subgraph of the largest connected component, nodes relabelled."""
    import scipy.sparse as sp
    from scipy.sparse.csgraph import connected_components

    n = data.num_nodes
    ei = data.edge_index.numpy()
    adj = sp.coo_matrix((np.ones(ei.shape[1]), (ei[0], ei[1])), shape=(n, n))
    _, component = connected_components(adj, directed=False)
    keep = np.flatnonzero(component == np.bincount(component).argmax())
    return induced(data, torch.from_numpy(keep))


def induced(data: Data, nodes: torch.Tensor) -> Data:
    """The subgraph on ``nodes`` (1-D index tensor) with every node attribute sliced."""
    nodes = torch.sort(nodes).values
    edge_index, _ = subgraph(nodes, data.edge_index, relabel_nodes=True, num_nodes=data.num_nodes)
    out = Data(edge_index=edge_index, num_nodes=len(nodes))
    for key in ("x", "y", "train", "val", "test"):
        if key in data:
            out[key] = data[key][nodes]
    out.node_ids = data.node_ids[nodes] if "node_ids" in data else nodes
    return out


def node_split(num_nodes: int, seed: int = NODE_SPLIT_SEED) -> tuple[torch.Tensor, ...]:
    """FED-PUB's split: a seeded permutation; the first 20% train, the next 40% test,
    the rest validation. Returns boolean masks (train, val, test), each (N,)."""
    order = torch.randperm(num_nodes, generator=torch.Generator().manual_seed(seed))
    n_train, n_test = round(0.2 * num_nodes), round(0.4 * num_nodes)
    masks = [torch.zeros(num_nodes, dtype=torch.bool) for _ in range(3)]
    masks[0][order[:n_train]] = True
    masks[2][order[n_train:n_train + n_test]] = True
    masks[1][order[n_train + n_test:]] = True
    return tuple(masks)


def _finish(name: str, raw: Data, num_classes: int) -> GraphDataset:
    raw.edge_index = to_undirected(raw.edge_index, num_nodes=raw.num_nodes)
    graph = largest_component(raw)
    graph.x = graph.x / graph.x.sum(dim=1, keepdim=True).clamp(min=1e-12)  # NormalizeFeatures
    graph.train, graph.val, graph.test = node_split(graph.num_nodes)
    graph.node_ids = torch.arange(graph.num_nodes)
    return GraphDataset(name, graph, num_classes)


def load_planetoid(name: str, root: Path) -> GraphDataset:
    """Cora or CiteSeer via ``torch_geometric.datasets.Planetoid``.

    PyG writes ``processed/`` beside ``raw/``, so the raw files are copied from the
    (possibly read-only) data root ``<root>/planetoid/<Name>/raw`` into a writable cache.
    """
    from torch_geometric.datasets import Planetoid

    pyg_name = PLANETOID[name]
    source = root / "planetoid" / pyg_name / "raw"
    work = writable_cache(root) / "planetoid"
    if not (work / pyg_name / "raw").is_dir():
        if source.is_dir():
            shutil.copytree(source, work / pyg_name / "raw")
        else:  # Planetoid downloads into the cache where the network allows
            try:
                Planetoid(str(work), pyg_name)
            except Exception:  # noqa: BLE001 - any download failure means: not here
                raise DatasetMissing(f"{source}: Planetoid raw files not found") from None
    dataset = Planetoid(str(work), pyg_name)
    return _finish(name, dataset[0].clone(), dataset.num_classes)


def load_sbm(root: Path | None = None, blocks: int = 4, block_size: int = 100,
             num_features: int = 32, p_in: float = 0.1, p_out: float = 0.005) -> GraphDataset:
    """A synthetic community graph for fast tests: an SBM whose block is the label,
    with Gaussian features whose mean depends on the label."""
    from torch_geometric.utils import stochastic_blockmodel_graph

    gen = torch.Generator().manual_seed(NODE_SPLIT_SEED)
    torch.manual_seed(NODE_SPLIT_SEED)
    probs = torch.full((blocks, blocks), p_out).fill_diagonal_(p_in)
    edge_index = stochastic_blockmodel_graph([block_size] * blocks, probs)
    y = torch.arange(blocks).repeat_interleave(block_size)
    centers = torch.randn(blocks, num_features, generator=gen)
    x = centers[y] + 1.5 * torch.randn(len(y), num_features, generator=gen)
    x = x - x.min()  # non-negative, so row normalisation keeps it a distribution
    return _finish("sbm", Data(x=x, y=y, edge_index=edge_index, num_nodes=len(y)), blocks)


def load_sbm_shift(root: Path | None = None, blocks: int = 4, block_size: int = 60,
                   num_features: int = 32) -> GraphDataset:
    """Two disconnected SBM communities with the same block structure and features, but
    community B labels its blocks by a permutation of community A's (concept shift):
    the case FED-PUB's similarity-weighted averaging is built for."""
    from torch_geometric.utils import stochastic_blockmodel_graph

    gen = torch.Generator().manual_seed(NODE_SPLIT_SEED)
    torch.manual_seed(NODE_SPLIT_SEED)
    probs = torch.full((blocks, blocks), 0.01).fill_diagonal_(0.2)
    centers = torch.randn(blocks, num_features, generator=gen)
    permutation = torch.roll(torch.arange(blocks), 1)
    xs, ys, edges, offset = [], [], [], 0
    for community in range(2):
        edge_index = stochastic_blockmodel_graph([block_size] * blocks, probs)
        block = torch.arange(blocks).repeat_interleave(block_size)
        xs.append(centers[block] + 1.0 * torch.randn(len(block), num_features, generator=gen))
        ys.append(block if community == 0 else permutation[block])
        edges.append(edge_index + offset)
        offset += len(block)
    x = torch.cat(xs)
    x = x - x.min()
    return _finish("sbm_shift", Data(x=x, y=torch.cat(ys), edge_index=torch.cat(edges, 1), num_nodes=offset),
                   blocks)


GRAPHS = {
    "cora": functools.partial(load_planetoid, "cora"),
    "citeseer": functools.partial(load_planetoid, "citeseer"),
    "sbm": load_sbm,
    "sbm_shift": load_sbm_shift,
}


# --- METIS partitions -----------------------------------------------------------------


def metis_parts(graph: Data, num_parts: int, seed: int) -> np.ndarray:
    """METIS membership (N,) of every node into ``num_parts`` parts (pymetis)."""
    import pymetis

    n = graph.num_nodes
    src, dst = graph.edge_index.numpy()
    adjacency = [[] for _ in range(n)]
    for s, d in zip(src.tolist(), dst.tolist()):
        if s != d:
            adjacency[s].append(d)
    options = pymetis.Options(seed=seed)
    _, membership = pymetis.part_graph(num_parts, adjacency=adjacency, options=options)
    return np.asarray(membership, dtype=np.int64)


def disjoint_subgraphs(graph: Data, num_clients: int, seed: int) -> list[torch.Tensor]:
    """Node sets (global ids) of the METIS parts; each client keeps intra-part edges only."""
    membership = metis_parts(graph, num_clients, seed)
    return [torch.from_numpy(np.flatnonzero(membership == k)) for k in range(num_clients)]


def overlapping_subgraphs(graph: Data, num_communities: int, clients_per_community: int,
                          seed: int) -> tuple[list[torch.Tensor], list[int]]:
    """METIS communities, each sampled by ``clients_per_community`` clients at a random
    half of its nodes. Returns the node sets and each client's community id."""
    membership = metis_parts(graph, num_communities, seed)
    rng = np.random.default_rng(seed)
    nodes, community = [], []
    for c in range(num_communities):
        members = np.flatnonzero(membership == c)
        for _ in range(clients_per_community):
            half = rng.choice(members, size=len(members) // 2, replace=False)
            nodes.append(torch.from_numpy(np.sort(half)))
            community.append(c)
    return nodes, community
