"""Datasets as in-memory arrays, decoded once per process.

Each loader returns an :class:`ArrayDataset` with a fixed train / test split
(independent of the run's seed, so every run of a comparison is scored on the same
test set). Loaders read from a local data root laid out as the standard loaders
lay it out (torchvision's ``FashionMNIST/raw/``), so ``../shared/data`` works as it
is; where a file is missing and torchvision is installed, torchvision downloads it.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DEFAULT_DATA_ROOT = "~/.cache/flowerbed"
DATA_ROOT_ENV = "FLOWERBED_DATA_ROOT"


class DatasetMissing(FileNotFoundError):
    """A dataset file is not under the data root; the message names the file."""


@dataclass(frozen=True)
class ArrayDataset:
    """Features and integer labels of one dataset.

    Shapes: ``x_train`` (N, *input_shape) float32, ``y_train`` (N,) int64;
    ``x_test`` (M, *input_shape), ``y_test`` (M,).
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])


def resolve_data_root(root: str | os.PathLike[str] | None = None) -> Path:
    """``root`` if given, else ``$FLOWERBED_DATA_ROOT``, else ``~/.cache/flowerbed``."""
    chosen = root or os.environ.get(DATA_ROOT_ENV) or DEFAULT_DATA_ROOT
    return Path(chosen).expanduser().resolve()


def _load_digits(root: Path) -> ArrayDataset:
    """scikit-learn's 8x8 digits (1797 images, shipped with the package): 80/20 split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = (bunch.images / 16.0).astype(np.float32)[:, None, :, :]
    y = bunch.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.2, stratify=y, random_state=0)
    return ArrayDataset("digits", x_tr, y_tr, x_te, y_te, num_classes=10)


_FMNIST_FILES = {
    "x_train": ("train-images-idx3-ubyte", 16),
    "y_train": ("train-labels-idx1-ubyte", 8),
    "x_test": ("t10k-images-idx3-ubyte", 16),
    "y_test": ("t10k-labels-idx1-ubyte", 8),
}
_FMNIST_MEAN, _FMNIST_STD = 0.2860, 0.3530


def _read_idx(path: Path, offset: int) -> np.ndarray:
    return np.frombuffer(path.read_bytes(), dtype=np.uint8, offset=offset)


def _load_fashion_mnist(root: Path) -> ArrayDataset:
    """Fashion-MNIST, 60000 + 10000 images 1x28x28, from ``<root>/FashionMNIST/raw``."""
    raw = root / "FashionMNIST" / "raw"
    missing = [raw / f for f, _ in _FMNIST_FILES.values() if not (raw / f).is_file()]
    if missing:
        _download_with_torchvision(root, missing[0])
    arrays = {k: _read_idx(raw / f, off) for k, (f, off) in _FMNIST_FILES.items()}
    norm = lambda a: ((a.reshape(-1, 1, 28, 28) / 255.0 - _FMNIST_MEAN) / _FMNIST_STD)  # noqa: E731
    return ArrayDataset(
        "fashion_mnist",
        norm(arrays["x_train"]).astype(np.float32),
        arrays["y_train"].astype(np.int64),
        norm(arrays["x_test"]).astype(np.float32),
        arrays["y_test"].astype(np.int64),
        num_classes=10,
    )


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


#: name -> loader(data_root). New datasets join with one line.
DATASETS: dict[str, Callable[[Path], ArrayDataset]] = {
    "digits": _load_digits,
    "fashion_mnist": _load_fashion_mnist,
}


@functools.lru_cache(maxsize=4)
def load_dataset(name: str, root: str | None = None) -> ArrayDataset:
    """Decode a dataset once per process; later calls return the cached arrays."""
    if name not in DATASETS:
        raise KeyError(f"unknown dataset {name!r}; allowed: {', '.join(DATASETS)}")
    return DATASETS[name](resolve_data_root(root))
