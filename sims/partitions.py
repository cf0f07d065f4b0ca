"""Non-IID partitions of a training set, and each client's label-matched local test split.

The partitioning itself is `flwr-datasets`' (IID, Dirichlet, pathological): this
module only adapts arrays to it and back to row indices, and draws the local test
splits that `flwr-datasets` lacks.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from datasets import Dataset
from flwr_datasets.partitioner import (
    DirichletPartitioner,
    IidPartitioner,
    Partitioner,
    PathologicalPartitioner,
)

from flowerbed.sims.datasets import ArrayDataset, load_dataset


class PartitionError(ValueError):
    """A partition that cannot be made; the message names the scenario key."""


@dataclass(frozen=True)
class ClientSplit:
    """Row indices of one client: ``train`` into the dataset's training set, ``test``
    into its test set (drawn to follow the client's training label distribution)."""

    train: np.ndarray
    test: np.ndarray


def _partitioner(partition, seed: int) -> Partitioner:  # partition: a PartitionConfig
    n = partition.num_clients
    if partition.kind == "iid":
        return IidPartitioner(num_partitions=n)
    if partition.kind == "dirichlet":
        return DirichletPartitioner(
            num_partitions=n, partition_by="label", alpha=partition.alpha,
            min_partition_size=partition.min_partition_size, self_balancing=False,
            shuffle=True, seed=seed,
        )
    if partition.kind == "pathological":
        return PathologicalPartitioner(
            num_partitions=n, partition_by="label",
            num_classes_per_partition=partition.classes_per_client,
            class_assignment_mode="first-deterministic", shuffle=True, seed=seed,
        )
    raise PartitionError(f"partition.kind: {partition.kind!r} is not supported")


def partition_train(labels: np.ndarray, partition, seed: int) -> list[np.ndarray]:
    """Split training rows over ``partition.num_clients`` clients.

    ``labels`` (N,) int. Returns one sorted index array per client.
    """
    if partition.num_clients > len(labels):
        raise PartitionError(
            f"partition.num_clients={partition.num_clients} exceeds the {len(labels)} training samples"
        )
    if partition.kind == "pathological" and partition.classes_per_client > len(np.unique(labels)):
        raise PartitionError(
            f"partition.classes_per_client={partition.classes_per_client} exceeds the "
            f"{len(np.unique(labels))} classes"
        )
    # Rows are shuffled by the seed first so that IID (contiguous shards) depends on it too.
    order = np.random.default_rng(seed).permutation(len(labels))
    table = Dataset.from_dict({"label": labels[order].tolist(), "row": order.tolist()})
    partitioner = _partitioner(partition, seed)
    partitioner.dataset = table
    try:
        parts = [np.sort(np.asarray(partitioner.load_partition(i)["row"], dtype=np.int64))
                 for i in range(partition.num_clients)]
    except ValueError as err:  # flwr-datasets gives up after its redraws
        raise PartitionError(f"partition: cannot be made ({err})") from None
    return parts


def local_test_split(
    train_labels: np.ndarray, test_labels: np.ndarray, ratio: float, rng: np.random.Generator
) -> np.ndarray:
    """Test rows for one client: ``round(ratio * n_c)`` samples of each class c it
    trains on (at least one), drawn without replacement from the held-out test set."""
    classes, counts = np.unique(train_labels, return_counts=True)
    picked = []
    for c, n_c in zip(classes, counts):
        pool = np.flatnonzero(test_labels == c)
        take = min(len(pool), max(1, round(ratio * n_c)))
        picked.append(rng.choice(pool, size=take, replace=False))
    return np.sort(np.concatenate(picked)) if picked else np.empty(0, dtype=np.int64)


def make_splits(data: ArrayDataset, partition, seed: int) -> list[ClientSplit]:
    """Every client's training rows and label-matched local test rows."""
    parts = partition_train(data.y_train, partition, seed)
    rng = np.random.default_rng([seed, 1])
    return [
        ClientSplit(part, local_test_split(data.y_train[part], data.y_test, partition.local_test_ratio, rng))
        for part in parts
    ]


@functools.lru_cache(maxsize=8)
def _cached_splits(dataset: str, root: str | None, partition, seed: int) -> list[ClientSplit]:
    return make_splits(load_dataset(dataset, root), partition, seed)


def scenario_splits(scenario) -> list[ClientSplit]:
    """The scenario's client splits, computed once per process and cached."""
    return _cached_splits(scenario.dataset.name, scenario.dataset.root, scenario.partition, scenario.seed)
