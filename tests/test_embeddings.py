"""Frozen-encoder embeddings: computed once from a real pretrained encoder, then cached."""

from __future__ import annotations

import numpy as np
import pytest

from flowerbed.sims import embeddings
from flowerbed.sims.datasets import DatasetConfig, _load_cached, load_dataset

from conftest import requires_shared_data


@requires_shared_data
def test_efficientnet_features_are_cached_by_recipe(tmp_path, monkeypatch):
    monkeypatch.setenv("FLOWERBED_CACHE", str(tmp_path / "cache"))
    spec = DatasetConfig(name="fashion_mnist_features", train_per_class=2, test_per_class=1)
    _load_cached.cache_clear()
    data = load_dataset(spec)
    assert data.x_train.shape == (20, 1280) and data.x_test.shape == (10, 1280)
    assert np.bincount(data.y_train).tolist() == [2] * 10
    assert (data.x_train >= 0).all() and data.x_train.std() > 0  # pooled after ReLU6
    files = list((tmp_path / "cache" / "embeddings").glob("*.npz"))
    assert len(files) == 1

    # A second load in a fresh process state reads the cache: the encoder is not run.
    _load_cached.cache_clear()
    monkeypatch.setitem(embeddings.ENCODERS, "efficientnet_lite0",
                        lambda: pytest.fail("the encoder ran although the cache holds the features"))
    again = load_dataset(spec)
    assert np.array_equal(again.x_train, data.x_train)

    # Another preprocessing is another cache entry.
    other = DatasetConfig(name="fashion_mnist_features", train_per_class=2, test_per_class=1, image_size=32)
    assert embeddings.cache_key(embeddings.resolve_root(), other) != embeddings.cache_key(embeddings.resolve_root(), spec)
    _load_cached.cache_clear()


def test_preprocess_makes_normalised_rgb_at_the_asked_size():
    images = np.full((2, 28, 28), 255, dtype=np.uint8)
    x = embeddings.preprocess(images, 64)
    assert tuple(x.shape) == (2, 3, 64, 64)
    expected = (1 - np.array(embeddings.IMAGENET_MEAN)) / np.array(embeddings.IMAGENET_STD)
    assert np.allclose(x[0, :, 10, 10].numpy(), expected, atol=1e-5)
