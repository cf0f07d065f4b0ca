"""What a scenario gives a client process: its data as tensors and its model.

Both are built once per worker process and reused across the rounds and clients
that the process serves (a Ray actor serves many simulated clients in turn).
"""

from __future__ import annotations

import collections
import functools
import os
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from flowerbed.sims.config import Scenario
from flowerbed.sims import datasets, partitions
from flowerbed.sims.datasets import ArrayDataset, GraphDataset, load_dataset
from flowerbed.sims.models import build_model
from flowerbed.sims.partitions import Partition, scenario_partition


@dataclass(frozen=True)
class ClientData:
    """One client's tensors: labelled train (n, *input_shape) / (n,), unlabelled train
    features (u, *input_shape) whose labels the client never sees, local test likewise,
    and a validation split (v, *input_shape) / (v,) held out of training (may be empty)."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_unlabeled: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    x_val: torch.Tensor | None = None
    y_val: torch.Tensor | None = None

    @property
    def num_val(self) -> int:
        return 0 if self.y_val is None else len(self.y_val)

    @property
    def num_train(self) -> int:
        return len(self.y_train)

    @property
    def num_test(self) -> int:
        return len(self.y_test)


@dataclass(frozen=True)
class GraphData:
    """A (sub)graph for full-batch node classification: ``x`` (N, F), ``edge_index``
    (2, E), ``y`` (N,), boolean masks ``train`` / ``val`` / ``test`` (N,)."""

    x: torch.Tensor
    edge_index: torch.Tensor
    y: torch.Tensor
    train: torch.Tensor
    val: torch.Tensor
    test: torch.Tensor

    @property
    def num_train(self) -> int:
        return int(self.train.sum())

    @property
    def num_test(self) -> int:
        return int(self.test.sum())


def adopt(scenario: Scenario, data: ArrayDataset | GraphDataset, partition: Partition) -> None:
    """Use ``data`` and ``partition`` (made by another process: a simulation's driver)
    as this process's dataset and partition of ``scenario``, instead of making them."""
    datasets.ADOPTED[scenario.dataset] = data
    partitions.ADOPTED[partitions.partition_key(scenario)] = partition


def client_device(scenario: Scenario) -> torch.device:
    """CUDA when the scenario gives clients a GPU share and this process sees a GPU
    (Ray sets ``CUDA_VISIBLE_DEVICES`` for actors with ``num_gpus``), else CPU."""
    use_cuda = scenario.client.num_gpus > 0 and torch.cuda.is_available()
    return torch.device("cuda" if use_cuda else "cpu")


def _graph_data(graph, device: torch.device) -> GraphData:
    return GraphData(*(getattr(graph, k).to(device) for k in ("x", "edge_index", "y", "train", "val", "test")))


#: Bytes of client tensors a process keeps (least recently used out first). A Ray actor
#: serves every client in turn, and each entry is a copy of that client's rows:
#: rebuilding one is a copy of its rows (about a millisecond for 600 Fashion-MNIST
#: images), paid by every client every round once they outnumber the cache.
CLIENT_CACHE_BYTES = int(os.environ.get("FLOWERBED_CLIENT_CACHE_MB", "256")) * 2**20
_client_cache: collections.OrderedDict = collections.OrderedDict()


def _nbytes(data: ClientData | GraphData) -> int:
    return sum(t.element_size() * t.nelement() for t in vars(data).values() if isinstance(t, torch.Tensor))


def client_data(scenario: Scenario, partition_id: int) -> ClientData | GraphData:
    """The data of client ``partition_id``, on the client's device (cached: see
    ``CLIENT_CACHE_BYTES``). Labels of the client's unlabelled rows are not loaded into
    it at all."""
    key = (scenario, partition_id)
    if key in _client_cache:
        _client_cache.move_to_end(key)
        return _client_cache[key][0]
    made = _client_data(scenario, partition_id)
    _client_cache[key] = (made, _nbytes(made))
    _held[0] += _client_cache[key][1]
    while _held[0] > CLIENT_CACHE_BYTES and len(_client_cache) > 1:
        _, (_, size) = _client_cache.popitem(last=False)
        _held[0] -= size
    return made


_held = [0]  # bytes in _client_cache


def _clear_client_cache() -> None:
    _client_cache.clear()
    _held[0] = 0


client_data.cache_clear = _clear_client_cache  # type: ignore[attr-defined] - as functools' caches


def _client_data(scenario: Scenario, partition_id: int) -> ClientData | GraphData:
    data = load_dataset(scenario.dataset)
    split = scenario_partition(scenario).clients[partition_id]
    device = client_device(scenario)
    if isinstance(data, GraphDataset):
        from flowerbed.sims.graphs import induced

        return _graph_data(induced(data.graph, torch.from_numpy(split.train)), device)
    return ClientData(*(torch.from_numpy(a).to(device) for a in (
        data.x_train[split.train], data.y_train[split.train], data.x_train[split.unlabeled],
        data.x_test[split.test], data.y_test[split.test], data.x_train[split.val], data.y_train[split.val])))


def hidden_labels(scenario: Scenario, partition_id: int) -> torch.Tensor:
    """The true labels of client ``partition_id``'s unlabelled rows, in the order of its
    ``x_unlabeled`` (u,). For analysis only (how accurate were the pseudo-labels); no
    training path reads them."""
    data = load_dataset(scenario.dataset)
    rows = scenario_partition(scenario).clients[partition_id].unlabeled
    return torch.from_numpy(data.y_train[rows])


@functools.lru_cache(maxsize=4)
def test_data(scenario: Scenario) -> ClientData | GraphData:
    """The held-out test set (array data), or the whole graph with its test mask."""
    data = load_dataset(scenario.dataset)
    if isinstance(data, GraphDataset):
        return _graph_data(data.graph, torch.device("cpu"))
    # A copy only where the arrays are read-only (adopted from Ray's object store).
    x, y = (torch.from_numpy(np.require(a, requirements="W")) for a in (data.x_test, data.y_test))
    empty = x[:0]
    return ClientData(empty, y[:0], empty, x, y)


def input_spec(data: ArrayDataset | GraphDataset) -> tuple[tuple[int, ...], int]:
    if isinstance(data, GraphDataset):
        return (data.num_features,), data.num_classes
    return data.input_shape, data.num_classes


def load_num_classes(scenario: Scenario) -> int:
    return input_spec(load_dataset(scenario.dataset))[1]


def new_model(scenario: Scenario) -> nn.Module:
    """The scenario's model, initialised from its seed."""
    shape, num_classes = input_spec(load_dataset(scenario.dataset))
    torch.manual_seed(scenario.seed)
    return build_model(scenario.model.name, shape, num_classes, scenario.model.hidden)


@functools.lru_cache(maxsize=4)
def reusable_model(scenario: Scenario) -> nn.Module:
    """A per-process model instance, on the client's device, to load received weights
    into (no rebuild per call)."""
    return new_model(scenario).to(client_device(scenario))


@functools.lru_cache(maxsize=4)
def initial_state(scenario: Scenario) -> dict[str, torch.Tensor]:
    """The scenario's initial weights (what a client's local parameters start from)."""
    return {k: v.clone() for k, v in new_model(scenario).state_dict().items()}


def round_seed(scenario: Scenario, server_round: int, partition_id: int) -> int:
    """The seed of one client's local work in one round: same config, same updates."""
    return int(np.random.SeedSequence([scenario.seed, server_round, partition_id]).generate_state(1)[0])
