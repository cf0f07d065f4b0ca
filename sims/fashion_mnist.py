"""Fashion-MNIST from its four IDX files (torchvision's ``FashionMNIST/raw`` layout)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from flowerbed.sims.base import ArrayDataset, DatasetMissing

_FMNIST_FILES = {
    "x_train": ("train-images-idx3-ubyte", 16),
    "y_train": ("train-labels-idx1-ubyte", 8),
    "x_test": ("t10k-images-idx3-ubyte", 16),
    "y_test": ("t10k-labels-idx1-ubyte", 8),
}
FMNIST_MEAN, FMNIST_STD = 0.2860, 0.3530


def fashion_mnist_raw(root: Path) -> dict[str, np.ndarray]:
    """The four IDX files as uint8 arrays: images (N, 28, 28), labels (N,)."""
    raw = root / "FashionMNIST" / "raw"
    missing = [raw / f for f, _ in _FMNIST_FILES.values() if not (raw / f).is_file()]
    if missing:
        _download_with_torchvision(root, missing[0])
    arrays = {k: np.frombuffer((raw / f).read_bytes(), np.uint8, offset=off)
              for k, (f, off) in _FMNIST_FILES.items()}
    for key in ("x_train", "x_test"):
        arrays[key] = arrays[key].reshape(-1, 28, 28)
    return arrays


def load_fashion_mnist(root: Path, spec: Any) -> ArrayDataset:
    """Fashion-MNIST, 60000 + 10000 images 1x28x28, from ``<root>/FashionMNIST/raw``."""
    raw = fashion_mnist_raw(root)
    # One float32 per byte value, computed as before in float64: the same numbers,
    # without the float64 temporaries (~560 MB at peak, in every process that loads it).
    lut = ((np.arange(256) / 255.0 - FMNIST_MEAN) / FMNIST_STD).astype(np.float32)
    norm = lambda a: lut[a[:, None]]  # noqa: E731
    return ArrayDataset("fashion_mnist", norm(raw["x_train"]), raw["y_train"].astype(np.int64),
                        norm(raw["x_test"]), raw["y_test"].astype(np.int64), num_classes=10)


def _download_with_torchvision(root: Path, missing: Path) -> None:
    try:
        from torchvision.datasets import FashionMNIST
    except ImportError:
        raise DatasetMissing(
            f"{missing}: dataset file not found (set --data-root, or install torchvision "
            "to download it)"
        ) from None
    for train in (True, False):
        FashionMNIST(str(root), train=train, download=True)
