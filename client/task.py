"""What a scenario gives a client process: its data as tensors and its model.

Both are built once per worker process and reused across the rounds and clients
that the process serves (a Ray actor serves many simulated clients in turn).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch

from flowerbed.sims.config import Scenario
from flowerbed.sims.datasets import load_dataset
from flowerbed.sims.models import SplitModel, build_model
from flowerbed.sims.partitions import scenario_splits


@dataclass(frozen=True)
class ClientData:
    """One client's tensors: train (n, *input_shape) / (n,), local test likewise."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


@functools.lru_cache(maxsize=256)
def client_data(scenario: Scenario, partition_id: int) -> ClientData:
    """The tensors of client ``partition_id`` (views into the cached dataset arrays)."""
    data = load_dataset(scenario.dataset.name, scenario.dataset.root)
    split = scenario_splits(scenario)[partition_id]
    return ClientData(
        torch.from_numpy(data.x_train[split.train]), torch.from_numpy(data.y_train[split.train]),
        torch.from_numpy(data.x_test[split.test]), torch.from_numpy(data.y_test[split.test]),
    )


@functools.lru_cache(maxsize=4)
def test_data(scenario: Scenario) -> tuple[torch.Tensor, torch.Tensor]:
    """The held-out, balanced test set of the scenario's dataset."""
    data = load_dataset(scenario.dataset.name, scenario.dataset.root)
    return torch.from_numpy(data.x_test), torch.from_numpy(data.y_test)


def new_model(scenario: Scenario) -> SplitModel:
    """The scenario's model, initialised from its seed."""
    data = load_dataset(scenario.dataset.name, scenario.dataset.root)
    torch.manual_seed(scenario.seed)
    return build_model(scenario.model.name, data.input_shape, data.num_classes, scenario.model.hidden)


@functools.lru_cache(maxsize=4)
def _model_cache(scenario: Scenario) -> SplitModel:
    return new_model(scenario)


def reusable_model(scenario: Scenario) -> SplitModel:
    """A per-process model instance to load received weights into (no rebuild per call)."""
    return _model_cache(scenario)


def round_seed(scenario: Scenario, server_round: int, partition_id: int) -> int:
    """The seed of one client's local work in one round: same config, same updates."""
    return int(np.random.SeedSequence([scenario.seed, server_round, partition_id]).generate_state(1)[0])
