"""Datasets load from a local data root, once per process, without writing to it."""

from __future__ import annotations

import numpy as np
import pytest

from flowerbed.sims.datasets import DatasetMissing, load_dataset, resolve_data_root

from conftest import SHARED_DATA, requires_shared_data


@requires_shared_data
def test_fashion_mnist_from_the_shared_root_is_complete_and_normalised():
    data = load_dataset("fashion_mnist", str(SHARED_DATA))
    assert data.x_train.shape == (60000, 1, 28, 28) and data.x_test.shape == (10000, 1, 28, 28)
    assert np.bincount(data.y_train).tolist() == [6000] * 10
    assert np.bincount(data.y_test).tolist() == [1000] * 10
    assert abs(float(data.x_train.mean())) < 0.01 and abs(float(data.x_train.std()) - 1) < 0.01


def test_digits_ships_with_scikit_learn_and_is_split_stratified():
    data = load_dataset("digits")
    assert len(data.y_train) + len(data.y_test) == 1797
    share = np.bincount(data.y_test) / np.bincount(data.y_train)
    assert np.allclose(share, 0.25, atol=0.03)


def test_datasets_are_decoded_once_per_process():
    assert load_dataset("digits") is load_dataset("digits")


def test_missing_file_names_the_file(tmp_path):
    with pytest.raises(DatasetMissing, match="FashionMNIST/raw/train-images-idx3-ubyte"):
        load_dataset("fashion_mnist", str(tmp_path))


def test_data_root_order(monkeypatch, tmp_path):
    monkeypatch.setenv("FLOWERBED_DATA_ROOT", str(tmp_path / "env"))
    assert resolve_data_root(tmp_path / "flag") == tmp_path / "flag"
    assert resolve_data_root() == tmp_path / "env"
    monkeypatch.delenv("FLOWERBED_DATA_ROOT")
    assert str(resolve_data_root()).endswith(".cache/flowerbed")
