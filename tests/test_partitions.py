"""Partitions (flwr-datasets) of real data, and the clients' local test splits."""

from __future__ import annotations

import numpy as np
import pytest

from flowerbed.sims.config import parse_scenario
from flowerbed.sims.datasets import load_dataset
from flowerbed.sims.partitions import PartitionError, local_test_split, make_splits, partition_train


def partition(kind: str, num_clients: int = 10, **params):
    tree = {
        "rounds": 1, "dataset": {"name": "digits"}, "model": {"name": "mlp"},
        "strategy": {"name": "fedavg"},
        "partition": {"kind": kind, "num_clients": num_clients, **params},
    }
    return parse_scenario(tree).partition


KINDS = [("iid", {}), ("dirichlet", {"alpha": 0.3}), ("pathological", {"classes_per_client": 2})]


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.mark.parametrize("kind,params", KINDS)
def test_partitions_are_disjoint_and_cover_the_training_set(digits, kind, params):
    parts = partition_train(digits.y_train, partition(kind, **params), seed=0)
    joined = np.concatenate(parts)
    assert len(parts) == 10
    assert len(joined) == len(np.unique(joined)), "a sample is on two clients"
    # Pathological deals each class to some client first ("first-deterministic").
    assert sorted(joined) == list(range(len(digits.y_train)))


@pytest.mark.parametrize("kind,params", KINDS)
def test_same_seed_same_partition_other_seed_other_partition(digits, kind, params):
    p = partition(kind, **params)
    a, b, c = (partition_train(digits.y_train, p, seed=s) for s in (0, 0, 1))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, z) for x, z in zip(a, c))


def test_dirichlet_skews_labels_and_pathological_limits_classes(digits):
    skewed = partition_train(digits.y_train, partition("dirichlet", alpha=0.1), seed=0)
    uniform = partition_train(digits.y_train, partition("iid"), seed=0)

    def mean_entropy(parts):
        ent = []
        for idx in parts:
            p = np.bincount(digits.y_train[idx], minlength=10) / len(idx)
            ent.append(-(p[p > 0] * np.log(p[p > 0])).sum())
        return np.mean(ent)

    assert mean_entropy(skewed) < 0.75 * mean_entropy(uniform)
    patho = partition_train(digits.y_train, partition("pathological", classes_per_client=2), seed=0)
    assert all(len(np.unique(digits.y_train[idx])) <= 2 for idx in patho)


def test_local_test_split_follows_the_client_label_distribution():
    rng = np.random.default_rng(0)
    train = np.array([0] * 80 + [1] * 20)
    test = np.repeat(np.arange(3), 100)
    picked = local_test_split(train, test, ratio=0.5, rng=rng)
    counts = np.bincount(test[picked], minlength=3)
    assert counts.tolist() == [40, 10, 0]
    assert len(np.unique(picked)) == len(picked)


def test_every_client_gets_a_test_split_of_its_own_classes(digits):
    splits = make_splits(digits, partition("dirichlet", alpha=0.3), seed=0)
    for split in splits:
        train_classes = set(digits.y_train[split.train])
        assert set(digits.y_test[split.test]) == train_classes


def test_more_clients_than_samples_is_rejected(digits):
    with pytest.raises(PartitionError, match="partition.num_clients"):
        partition_train(digits.y_train[:5], partition("iid", num_clients=6), seed=0)
