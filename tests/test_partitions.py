"""Partitions of real data: each kind covers what it should, is reproducible, and keeps
test samples, hidden labels and other communities where they belong."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flowerbed.sims.config import ConfigError, parse_scenario
from flowerbed.sims.datasets import load_dataset
from flowerbed.sims.partitions import (
    PartitionError,
    class_groups,
    local_test_split,
    make_partition,
    scenario_partition,
)

from conftest import requires_shared_data


def scenario(dataset: str, **partition):
    model = "gcn" if dataset in ("cora", "citeseer", "sbm") else "mlp"
    tree = {"rounds": 1, "dataset": {"name": dataset}, "model": {"name": model},
            "strategy": {"name": "fedavg"}, "partition": partition}
    return parse_scenario(tree)


def partition(dataset: str, seed: int = 0, **params):
    s = scenario(dataset, **params)
    return make_partition(load_dataset(s.dataset), s.partition, seed)


def trains(p) -> list[np.ndarray]:
    return [c.train for c in p.clients]


def assert_disjoint(parts: list[np.ndarray]) -> np.ndarray:
    joined = np.concatenate(parts)
    assert len(joined) == len(np.unique(joined)), "a sample is on two clients"
    return joined


# --- label skew on digits (ships with scikit-learn) ------------------------------------

LABEL_SKEW = [
    {"kind": "iid", "num_clients": 10},
    {"kind": "dirichlet", "num_clients": 10, "alpha": 0.3},
    {"kind": "pathological", "num_clients": 10, "classes_per_client": 2},
    {"kind": "dirichlet", "num_clients": 10, "alpha": 0.3, "min_per_class": 1, "min_partition_size": 0},
]


@pytest.mark.parametrize("params", LABEL_SKEW, ids=lambda p: p["kind"] + str(p.get("min_per_class", "")))
def test_label_skew_partitions_are_disjoint_and_cover(params):
    data = load_dataset("digits")
    p = partition("digits", **params)
    assert len(p.clients) == 10
    assert sorted(assert_disjoint(trains(p))) == list(range(len(data.y_train)))


@pytest.mark.parametrize("params", LABEL_SKEW, ids=lambda p: p["kind"] + str(p.get("min_per_class", "")))
def test_same_seed_same_partition_other_seed_other(params):
    a, b, c = (partition("digits", seed=s, **params) for s in (0, 0, 1))
    assert all(np.array_equal(x, y) for x, y in zip(trains(a), trains(b)))
    assert all(np.array_equal(x.test, y.test) for x, y in zip(a.clients, b.clients))
    assert not all(np.array_equal(x, z) for x, z in zip(trains(a), trains(c)))


def test_dirichlet_skews_labels_and_pathological_limits_classes():
    y = load_dataset("digits").y_train

    def mean_entropy(p):
        ent = []
        for idx in trains(p):
            q = np.bincount(y[idx], minlength=10) / len(idx)
            ent.append(-(q[q > 0] * np.log(q[q > 0])).sum())
        return np.mean(ent)

    skewed = partition("digits", kind="dirichlet", num_clients=10, alpha=0.1)
    uniform = partition("digits", kind="iid", num_clients=10)
    assert mean_entropy(skewed) < 0.75 * mean_entropy(uniform)
    patho = partition("digits", kind="pathological", num_clients=10, classes_per_client=2)
    assert all(len(np.unique(y[idx])) <= 2 for idx in trains(patho))


def test_min_per_class_gives_every_client_every_class():
    y = load_dataset("digits").y_train
    p = partition("digits", kind="dirichlet", num_clients=10, alpha=0.05, min_per_class=1, min_partition_size=0)
    assert all(np.bincount(y[idx], minlength=10).min() >= 1 for idx in trains(p))


def test_local_test_split_follows_the_client_label_distribution():
    rng = np.random.default_rng(0)
    train = np.array([0] * 80 + [1] * 20)
    test = np.repeat(np.arange(3), 100)
    picked = local_test_split(train, test, ratio=0.5, rng=rng)
    assert np.bincount(test[picked], minlength=3).tolist() == [40, 10, 0]
    assert len(np.unique(picked)) == len(picked)


def test_every_client_is_tested_on_its_own_classes():
    data = load_dataset("digits")
    for client in partition("digits", kind="dirichlet", num_clients=10, alpha=0.3).clients:
        assert set(data.y_test[client.test]) == set(data.y_train[client.train])


# --- long tail (FedLoGe) ---------------------------------------------------------------


@requires_shared_data
@pytest.mark.parametrize("imbalance", [100, 50, 10])
def test_longtail_realises_the_imbalance_factor_and_tags_groups(imbalance):
    data = load_dataset("fashion_mnist")
    p = partition("fashion_mnist", kind="longtail_dirichlet", num_clients=40,
                  imbalance_factor=imbalance, alpha=0.5)
    rows = assert_disjoint(trains(p))
    counts = np.bincount(data.y_train[rows], minlength=10)
    assert abs(counts.max() / counts.min() - imbalance) / imbalance < 0.05
    assert counts[0] == 6000 and list(counts) == sorted(counts, reverse=True)
    groups = p.class_groups
    assert sorted(groups["head"] + groups["middle"] + groups["tail"]) == list(range(10))
    if imbalance == 100:  # the spec's worked example: 3 / 3 / 4
        assert groups == {"head": [0, 1, 2], "middle": [3, 4, 5], "tail": [6, 7, 8, 9]}
    # Local test sets mirror the training labels: t_kc = floor(n_kc * |test| / N_train).
    ratio = len(data.y_test) / len(rows)
    for client in p.clients[:5]:
        n_kc = np.bincount(data.y_train[client.train], minlength=10)
        t_kc = np.bincount(data.y_test[client.test], minlength=10)
        expected = np.where(n_kc > 0, np.minimum(1000, np.maximum(1, (ratio * n_kc).astype(int))), 0)
        assert t_kc.tolist() == expected.tolist()


def test_class_groups_follow_the_75_95_rule():
    counts = np.array([6000, 3596, 2156, 1292, 774, 464, 278, 166, 100, 60])
    assert class_groups(counts) == {"head": [0, 1, 2], "middle": [3, 4, 5], "tail": [6, 7, 8, 9]}


# --- domains ---------------------------------------------------------------------------


def _row_keys(x: np.ndarray) -> set[bytes]:
    return {row.tobytes() for row in x}


@requires_shared_data
@pytest.mark.parametrize("dataset,domains", [("office_caltech10", 4), ("mnist_usps", 2)])
def test_domain_clients_hold_one_domain_each_and_never_a_test_sample(dataset, domains):
    data = load_dataset(dataset)
    p = partition(dataset, kind="domain", clients_per_domain=2)
    assert len(p.clients) == 2 * domains
    rows = assert_disjoint(trains(p))
    assert sorted(rows) == list(range(len(data.y_train)))
    for client in p.clients:
        d = data.domains.index(client.domain)
        assert set(data.domain_train[client.train]) == {d}
        assert set(data.domain_test[client.test]) == {d}
    # No test sample (by content) is in any client's training set.
    test_keys = _row_keys(data.x_test)
    duplicates_in_source = len(data.x_test) - len(test_keys)
    train_keys = _row_keys(data.x_train[rows])
    assert len(test_keys & train_keys) <= duplicates_in_source + _source_duplicates(data)


def _source_duplicates(data) -> int:
    """Rows that occur more than once in the raw data (identical images / histograms)."""
    keys = [row.tobytes() for row in np.concatenate([data.x_train, data.x_test])]
    return len(keys) - len(set(keys))


@requires_shared_data
def test_domain_dirichlet_keeps_floor_q_of_each_class_and_tests_on_all_classes():
    data = load_dataset("office_caltech10")
    a = partition("office_caltech10", kind="domain_dirichlet", alpha=0.1)
    b = partition("office_caltech10", kind="domain_dirichlet", alpha=0.1)
    assert all(np.array_equal(x, y) for x, y in zip(trains(a), trains(b)))
    assert_disjoint(trains(a))
    kept_classes = [len(np.unique(data.y_train[t])) for t in trains(a)]
    assert min(kept_classes) < 10, "alpha 0.1 should leave some classes out of some domains"
    for client in a.clients:
        assert len(np.unique(data.y_test[client.test])) == 10
    wide = partition("office_caltech10", kind="domain_dirichlet", alpha=100.0)
    # Large alpha: each domain keeps about a quarter of every class.
    share = sum(len(t) for t in trains(wide)) / len(data.y_train)
    assert 0.15 < share < 0.35


@requires_shared_data
def test_samples_per_client_truncates_stratified():
    data = load_dataset("mnist_usps")
    p = partition("mnist_usps", kind="domain", samples_per_client=126)
    for client in p.clients:
        assert len(client.train) == 126
        assert np.bincount(data.y_train[client.train], minlength=10).min() >= 8


@requires_shared_data
@pytest.mark.parametrize("samples", [126, None])
def test_validation_rows_are_held_out_stratified_and_leave_training_rows_alone(samples):
    data = load_dataset("mnist_usps")
    plain = partition("mnist_usps", kind="domain", samples_per_client=samples)
    held = partition("mnist_usps", kind="domain", samples_per_client=samples, val_fraction=0.1)
    for before, after in zip(plain.clients, held.clients):
        pool = int((data.domain_train == data.domains.index(after.domain)).sum())
        assert len(after.val) == round(0.1 * pool)
        assert not np.intersect1d(after.val, after.train).size, "a validation row is trained on"
        assert set(data.domain_train[after.val]) == {data.domains.index(after.domain)}
        # Stratified: every class in about its share of the domain.
        assert np.bincount(data.y_train[after.val], minlength=10).min() >= 0.6 * len(after.val) / 10
        if samples:  # the training rows are those drawn without a validation split
            np.testing.assert_array_equal(before.train, after.train)
        else:  # all rows but the validation ones
            np.testing.assert_array_equal(np.setdiff1d(before.train, after.val), after.train)


@requires_shared_data
def test_a_validation_split_larger_than_the_spare_rows_names_the_key():
    with pytest.raises(PartitionError, match=r"partition\.val_fraction"):
        partition("office_caltech10", kind="domain", samples_per_client=112, val_fraction=0.5)


# --- few labels ------------------------------------------------------------------------


@pytest.mark.parametrize("fraction", [0.05, 0.1, 0.2])
def test_few_labels_keep_the_asked_fraction(fraction):
    p = partition("digits", kind="dirichlet", num_clients=5, alpha=0.5, labeled_fraction=fraction)
    for client in p.clients:
        total = len(client.train) + len(client.unlabeled)
        assert len(client.train) == max(1, int(fraction * total))
        assert not set(client.train) & set(client.unlabeled)


def test_hidden_labels_never_reach_the_trainer(monkeypatch):
    """Poison the hidden labels: a trainer that read one would see an impossible class
    (and cross-entropy would fail); the client's data holds none of them."""
    from flowerbed.sims import task
    from flowerbed.client.trainer import TrainSettings, fit
    from flowerbed.sims import partitions

    s = scenario("digits", kind="dirichlet", num_clients=4, alpha=0.5, labeled_fraction=0.1)
    data = load_dataset(s.dataset)
    split = scenario_partition(s)
    poisoned_y = data.y_train.copy()
    for client in split.clients:
        poisoned_y[client.unlabeled] = 10_000
    poisoned = type(data)(data.name, data.x_train, poisoned_y, data.x_test, data.y_test, data.num_classes)
    monkeypatch.setattr(task, "load_dataset", lambda spec: poisoned)
    monkeypatch.setattr(partitions, "load_dataset", lambda spec: poisoned)
    task.client_data.cache_clear()
    try:
        for k, client in enumerate(split.clients):
            cd = task.client_data(s, k)
            labels = [t for t in vars(cd).values() if t.dtype == torch.int64]
            assert all(int(t.max()) < 10 for t in labels if len(t))
            assert len(cd.y_train) == len(client.train) and len(cd.x_unlabeled) == len(client.unlabeled)
            model = task.new_model(s)
            fit(model, cd, TrainSettings(local_epochs=1, batch_size=16, lr=0.01), torch.Generator().manual_seed(0))
    finally:
        task.client_data.cache_clear()


# --- subgraphs ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cora():
    pytest.importorskip("torch_geometric")
    from conftest import SHARED_DATA

    if not SHARED_DATA.is_dir():
        pytest.skip("no shared data")
    return load_dataset("cora")


def _edge_set(edge_index: torch.Tensor) -> set[tuple[int, int]]:
    return set(map(tuple, edge_index.t().tolist()))


@pytest.mark.parametrize("clients", [5, 10])
def test_metis_disjoint_clients_partition_the_graph_with_intra_part_edges_only(cora, clients):
    from flowerbed.sims.task import client_data

    s = scenario("cora", kind="subgraph_disjoint", num_clients=clients)
    p = scenario_partition(s)
    nodes = assert_disjoint(trains(p))
    assert sorted(nodes) == list(range(cora.graph.num_nodes))
    graph_edges = _edge_set(cora.graph.edge_index)
    kept = 0
    for k, client in enumerate(p.clients):
        sub = client_data(s, k)
        ids = client.train  # local node i is global node ids[i]
        local = _edge_set(sub.edge_index)
        assert {(int(ids[a]), int(ids[b])) for a, b in local} <= graph_edges
        induced_here = {(a, b) for a, b in graph_edges if a in set(ids) and b in set(ids)}
        assert len(local) == len(induced_here)
        kept += len(local)
    assert kept < len(graph_edges)  # cross-part edges were dropped
    # FED-PUB's split: 20% train, 40% test of the whole LCC (2485 nodes).
    assert cora.graph.num_nodes == 2485
    assert int(cora.graph.train.sum()) == round(0.2 * 2485) and int(cora.graph.test.sum()) == round(0.4 * 2485)


def test_overlapping_clients_share_nodes_within_a_community_only(cora):
    p = partition("cora", kind="subgraph_overlap", num_clients=10, num_communities=2, clients_per_community=5)
    sets = [set(c.train.tolist()) for c in p.clients]
    for i, a in enumerate(p.clients):
        for j, b in enumerate(p.clients[i + 1:], start=i + 1):
            shared = sets[i] & sets[j]
            if a.community == b.community:
                assert shared, "clients of one community should overlap"
            else:
                assert not shared, "clients of different communities share a node"


def test_same_seed_same_metis_partition(cora):
    a = partition("cora", seed=3, kind="subgraph_disjoint", num_clients=10)
    b = partition("cora", seed=3, kind="subgraph_disjoint", num_clients=10)
    assert all(np.array_equal(x, y) for x, y in zip(trains(a), trains(b)))
    c = partition("cora", seed=3, kind="subgraph_overlap", num_clients=10, num_communities=2)
    d = partition("cora", seed=4, kind="subgraph_overlap", num_clients=10, num_communities=2)
    assert not all(np.array_equal(x, y) for x, y in zip(trains(c), trains(d)))


def test_sbm_is_a_fast_community_graph():
    data = load_dataset("sbm")
    p = make_partition(data, scenario("sbm", kind="subgraph_disjoint", num_clients=4).partition, 0)
    # METIS follows the planted communities: each part is dominated by one label.
    purity = [np.bincount(data.graph.y[c.train].numpy()).max() / len(c.train) for c in p.clients]
    assert min(purity) > 0.8


# --- bad partition parameters fail at validation, naming the key -------------------------


@pytest.mark.parametrize("params,key", [
    ({"kind": "dirichlet", "num_clients": 4, "alpha": 0.0}, "partition.alpha"),
    ({"kind": "dirichlet", "num_clients": 4, "alpha": -1.0}, "partition.alpha"),
    ({"kind": "longtail_dirichlet", "num_clients": 4, "imbalance_factor": 0.5, "alpha": 0.5},
     "partition.imbalance_factor"),
    ({"kind": "dirichlet", "num_clients": 4, "alpha": 0.5, "labeled_fraction": 0.0},
     "partition.labeled_fraction"),
    ({"kind": "subgraph_overlap", "num_clients": 9, "num_communities": 2}, "partition.num_clients"),
    ({"kind": "domain", "clients_per_domain": 0}, "partition.clients_per_domain"),
])
def test_bad_partition_parameters_name_the_key(params, key):
    dataset = "office_caltech10" if params["kind"] == "domain" else "digits"
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        scenario(dataset, **params)


@pytest.mark.parametrize("dataset,params,key", [
    # 200 clients x 1 sample of every class: digits has fewer samples of some class.
    ("digits", {"kind": "dirichlet", "num_clients": 200, "alpha": 0.5, "min_per_class": 1}, "partition.num_clients"),
])
def test_impossible_partitions_are_rejected_before_any_worker(dataset, params, key):
    with pytest.raises(PartitionError, match=key.replace(".", r"\.")):
        partition(dataset, **params)


@pytest.mark.parametrize("dataset,params,model", [
    ("digits", {"kind": "domain"}, "mlp"),
    ("digits", {"kind": "subgraph_disjoint", "num_clients": 4}, "mlp"),
    ("cora", {"kind": "dirichlet", "num_clients": 4, "alpha": 0.5}, "gcn"),
    ("cora", {"kind": "subgraph_disjoint", "num_clients": 4}, "mlp"),
])
def test_partition_kind_and_model_must_fit_the_dataset(dataset, params, model):
    tree = {"rounds": 1, "dataset": {"name": dataset}, "model": {"name": model},
            "strategy": {"name": "fedavg"}, "partition": params}
    with pytest.raises(ConfigError, match="does not fit|needs a multi-domain"):
        parse_scenario(tree)


@requires_shared_data
def test_longtail_with_more_clients_than_the_rarest_class_allows_is_rejected():
    # IF 100 leaves 60 samples in the rarest class; 2000 clients cannot all get a sample.
    with pytest.raises(PartitionError, match="partition.num_clients"):
        partition("fashion_mnist", kind="longtail_dirichlet", num_clients=20000, imbalance_factor=100, alpha=0.5)


def test_a_partition_is_kept_on_disk_and_read_back_equal_without_remaking_it(tmp_path, monkeypatch):
    from flowerbed.sims import partitions

    monkeypatch.setenv("FLOWERBED_CACHE", str(tmp_path))
    scenario = parse_scenario({"rounds": 1, "dataset": {"name": "digits"}, "strategy": {"name": "fedavg"},
                               "partition": {"kind": "dirichlet", "num_clients": 7, "alpha": 0.3},
                               "model": {"name": "mlp"}})
    partitions._cached_partition.cache_clear()
    made = partitions.scenario_partition(scenario)
    assert len(list((tmp_path / "partitions").glob("*.pkl"))) == 1
    partitions._cached_partition.cache_clear()

    def no_remaking(*args):
        raise AssertionError("made again")

    monkeypatch.setattr(partitions, "make_partition", no_remaking)
    read = partitions.scenario_partition(scenario)
    assert len(read.clients) == len(made.clients)
    for a, b in zip(made.clients, read.clients):
        assert np.array_equal(a.train, b.train) and np.array_equal(a.test, b.test)
    # Another seed is another file, made anew.
    partitions._cached_partition.cache_clear()
    with pytest.raises(AssertionError, match="made again"):
        partitions.scenario_partition(scenario.model_copy(update={"seed": 1}))
    partitions._cached_partition.cache_clear()
