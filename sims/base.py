"""The types every dataset module shares: datasets as arrays or one graph, the error
for a missing file, and where the data root is. Nothing here imports another
``flowerbed.sims`` module, so the loaders (``datasets``, ``graphs``, ``embeddings``)
can all build on it without importing each other in a circle."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_DATA_ROOT = "~/.cache/flowerbed"
DATA_ROOT_ENV = "FLOWERBED_DATA_ROOT"
#: Seed of every dataset-level train/test split (fixed: not the run's seed).
SPLIT_SEED = 0


#: The model names a scenario may give (``sims.models.MODELS`` builds each): here, so
#: that validating a config imports no torch (``flowerbed --help`` and a bad input's
#: error come back in a fraction of a second). The graph models take graphs only.
MODEL_NAMES = ("mlp", "mlp2", "logreg", "cnn", "cnn_bn", "mlp_bn", "gcn", "masked_gcn")
GRAPH_MODELS = ("gcn", "masked_gcn")


class DatasetMissing(FileNotFoundError):
    """A dataset file is not under the data root; the message names the file."""


@dataclass(frozen=True, eq=False)
class ArrayDataset:
    """Features and integer labels of one dataset.

    Shapes: ``x_train`` (N, *input_shape) float32, ``y_train`` (N,) int64;
    ``x_test`` (M, *input_shape), ``y_test`` (M,). Multi-domain sets add
    ``domain_train`` (N,) / ``domain_test`` (M,), indices into ``domains``.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    domains: tuple[str, ...] = ()
    domain_train: np.ndarray | None = None
    domain_test: np.ndarray | None = None

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])


@dataclass(frozen=True, eq=False)
class GraphDataset:
    """One graph (a PyG ``Data``): ``x`` (N, F) float, ``y`` (N,) int64, ``edge_index``
    (2, E) int64 (undirected, both directions), boolean node masks ``train`` / ``val`` /
    ``test`` (N,). Defined here, not in ``sims.graphs``, so that telling graphs from
    arrays does not import torch_geometric (seconds and ~160 MB per process)."""

    name: str
    graph: Any
    num_classes: int

    @property
    def num_features(self) -> int:
        return int(self.graph.x.shape[1])


def resolve_data_root(root: str | os.PathLike[str] | None = None) -> Path:
    """``root`` if given, else ``$FLOWERBED_DATA_ROOT``, else ``~/.cache/flowerbed``."""
    chosen = root or os.environ.get(DATA_ROOT_ENV) or DEFAULT_DATA_ROOT
    return Path(chosen).expanduser().resolve()


def require(path: Path) -> Path:
    if not path.is_file():
        raise DatasetMissing(f"{path}: dataset file not found (set --data-root or $FLOWERBED_DATA_ROOT)")
    return path
