"""Datasets as in-memory arrays (or one graph), decoded once per process.

Each loader returns an :class:`ArrayDataset` with a fixed train / test split
(independent of the run's seed, so every run of a comparison is scored on the same
test set); multi-domain sets also say which domain each row comes from. Loaders read
a local data root laid out as the standard loaders lay it out (torchvision's
``FashionMNIST/raw/``, PyG's ``planetoid/<Name>/raw``), so ``../shared/data`` works as
it is; nothing is written there (derived files go to :func:`~flowerbed.sims.cache.writable_cache`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from flowerbed.sims.base import (DATA_ROOT_ENV, DEFAULT_DATA_ROOT, SPLIT_SEED, ArrayDataset,  # noqa: F401 - re-exported
                                 DatasetMissing, GraphDataset, require, resolve_data_root)
from flowerbed.sims.fashion_mnist import load_fashion_mnist

def _loadmat(path: Path) -> dict[str, np.ndarray]:
    import scipy.io

    return scipy.io.loadmat(str(require(path)))


def _stratified_split(y: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    rows = np.arange(len(y))
    train, test = train_test_split(rows, test_size=test_fraction, stratify=y, random_state=seed)
    return np.sort(train), np.sort(test)


def _from_domains(name: str, parts: list[tuple[str, np.ndarray, np.ndarray]], num_classes: int,
                  test_fraction: float) -> ArrayDataset:
    """Concatenate per-domain (x, y), each split stratified train/test with a fixed seed."""
    xs_tr, ys_tr, ds_tr, xs_te, ys_te, ds_te = [], [], [], [], [], []
    for d, (_, x, y) in enumerate(parts):
        train, test = _stratified_split(y, test_fraction, SPLIT_SEED + d)
        xs_tr.append(x[train]), ys_tr.append(y[train]), ds_tr.append(np.full(len(train), d))
        xs_te.append(x[test]), ys_te.append(y[test]), ds_te.append(np.full(len(test), d))
    cat = np.concatenate
    return ArrayDataset(
        name, cat(xs_tr).astype(np.float32), cat(ys_tr).astype(np.int64),
        cat(xs_te).astype(np.float32), cat(ys_te).astype(np.int64), num_classes,
        tuple(p[0] for p in parts), cat(ds_tr).astype(np.int64), cat(ds_te).astype(np.int64),
    )


# --- loaders --------------------------------------------------------------------------


def _load_digits(root: Path, spec: Any) -> ArrayDataset:
    """scikit-learn's 8x8 digits (1797 images, shipped with the package): 80/20 split."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.images / 16.0).astype(np.float32)[:, None, :, :]
    y = bunch.target.astype(np.int64)
    train, test = _stratified_split(y, 0.2, SPLIT_SEED)
    return ArrayDataset("digits", x[train], y[train], x[test], y[test], num_classes=10)


OFFICE_DOMAINS = {"amazon": "amazon", "webcam": "webcam", "dslr": "dslr", "caltech": "Caltech10"}


def _load_office_caltech10(root: Path, spec: Any) -> ArrayDataset:
    """Office-Caltech-10, SURF 800-d bag of visual words, 4 domains, 10 classes.

    Per-sample transform only (no statistic shared across clients): divide each row by
    its sum, then square root (Hellinger), times ``dataset.feature_scale``.
    """
    parts = []
    for domain, stem in OFFICE_DOMAINS.items():
        mat = _loadmat(root / "office_caltech10" / "surf" / f"{stem}_SURF_L10.mat")
        counts = mat["fts"].astype(np.float64)
        x = np.sqrt(counts / np.maximum(counts.sum(axis=1, keepdims=True), 1e-12)) * spec.feature_scale
        parts.append((domain, x, mat["labels"].ravel().astype(np.int64) - 1))
    return _from_domains("office_caltech10", parts, 10, spec.test_fraction)


def _load_mnist_usps(root: Path, spec: Any) -> ArrayDataset:
    """MNIST (2000) and USPS (1800) digits at 16x16 in [0, 1], one domain each."""
    parts = []
    for domain, file in (("mnist", "MNIST.mat"), ("usps", "USPS.mat")):
        mat = _loadmat(root / "digits" / "mnist_usps" / file)
        parts.append((domain, mat["fts"].reshape(-1, 1, 16, 16), mat["labels"].ravel().astype(np.int64) - 1))
    return _from_domains("mnist_usps", parts, 10, spec.test_fraction)


def _load_usps(root: Path, spec: Any) -> ArrayDataset:
    """USPS, full (7291 + 2007), 1x16x16 in [0, 1]; needs h5py."""
    import h5py

    with h5py.File(require(root / "digits" / "usps" / "usps.h5"), "r") as f:
        arrays = {f"{k}_{part}": f[part][key][:] for part in ("train", "test")
                  for k, key in (("x", "data"), ("y", "target"))}
    shape = (-1, 1, 16, 16)
    return ArrayDataset("usps", arrays["x_train"].reshape(shape).astype(np.float32),
                        arrays["y_train"].astype(np.int64), arrays["x_test"].reshape(shape).astype(np.float32),
                        arrays["y_test"].astype(np.int64), num_classes=10)


AMAZON_DOMAINS = ("books", "dvd", "electronics", "kitchen")


def _load_amazon_reviews(root: Path, spec: Any) -> ArrayDataset:
    """Amazon reviews, 4 domains, binary sentiment: the ``dataset.max_features`` most
    frequent term counts, log1p. Each domain's own train file (2000) and a stratified
    subsample of ``dataset.test_per_domain`` of its test file."""
    xs_tr, ys_tr, ds_tr, xs_te, ys_te, ds_te = [], [], [], [], [], []
    for d, domain in enumerate(AMAZON_DOMAINS):
        for part, xs, ys, ds in (("train", xs_tr, ys_tr, ds_tr), ("test", xs_te, ys_te, ds_te)):
            mat = _loadmat(root / "amazon_reviews" / f"{domain}_{part}.mat")
            x = np.log1p(np.asarray(mat["data"][:, :spec.max_features], dtype=np.float32))
            y = (mat["labels"].ravel() > 0).astype(np.int64)
            if part == "test" and spec.test_per_domain and spec.test_per_domain < len(y):
                _, keep = _stratified_split(y, spec.test_per_domain, SPLIT_SEED + d)
                x, y = x[keep], y[keep]
            xs.append(x), ys.append(y), ds.append(np.full(len(y), d))
    cat = np.concatenate
    return ArrayDataset("amazon_reviews", cat(xs_tr), cat(ys_tr), cat(xs_te), cat(ys_te), 2,
                        AMAZON_DOMAINS, cat(ds_tr), cat(ds_te))


def _load_anisotropic_gaussians(root: Path, spec: Any) -> ArrayDataset:
    from flowerbed.sims.synthetic import anisotropic_gaussians

    return anisotropic_gaussians(spec)


def _load_fashion_mnist_features(root: Path, spec: Any) -> ArrayDataset:
    from flowerbed.sims.embeddings import fashion_mnist_embeddings

    return fashion_mnist_embeddings(root, spec)


#: name -> loader(data_root, dataset spec). New datasets join with one line.
DATASETS: dict[str, Callable[[Path, Any], Any]] = {
    "digits": _load_digits,
    "fashion_mnist": load_fashion_mnist,
    "fashion_mnist_features": _load_fashion_mnist_features,
    "office_caltech10": _load_office_caltech10,
    "mnist_usps": _load_mnist_usps,
    "usps": _load_usps,
    "amazon_reviews": _load_amazon_reviews,
    "cora": lambda root, spec: _graph("cora", root),
    "citeseer": lambda root, spec: _graph("citeseer", root),
    "sbm": lambda root, spec: _graph("sbm", root),
    "sbm_shift": lambda root, spec: _graph("sbm_shift", root),
    "anisotropic_gaussians": _load_anisotropic_gaussians,
}
GRAPH_DATASETS = ("cora", "citeseer", "sbm", "sbm_shift")
#: Datasets whose samples are images (C, H, W): the ones an image augmentation fits.
IMAGE_DATASETS = ("digits", "fashion_mnist", "mnist_usps", "usps")
#: The domains of each multi-domain dataset, in client order.
DATASET_DOMAINS: dict[str, tuple[str, ...]] = {
    "office_caltech10": tuple(OFFICE_DOMAINS),
    "mnist_usps": ("mnist", "usps"),
    "amazon_reviews": AMAZON_DOMAINS,
}


def _graph(name: str, root: Path):
    from flowerbed.sims.graphs import GRAPHS

    return GRAPHS[name](root)


class DatasetConfig(BaseModel):
    """A scenario's ``[dataset]`` table; hashable, so loads are cached by it."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)  # no bool for a number
    name: Literal[tuple(DATASETS)]  # type: ignore[valid-type]
    # Where datasets live; None: --data-root, $FLOWERBED_DATA_ROOT, ~/.cache/flowerbed.
    root: str | None = None
    # Multi-domain sets: the test share of each domain's stratified split.
    test_fraction: float = Field(default=0.3, gt=0, lt=1)
    # office_caltech10: the Hellinger features are multiplied by this.
    feature_scale: float = Field(default=1.0, gt=0)
    # amazon_reviews: most frequent terms kept; test reviews kept per domain.
    max_features: int = Field(default=2000, ge=1, le=5000)
    test_per_domain: int = Field(default=1000, ge=2)
    # fashion_mnist_features: the frozen encoder, its input size, and optional
    # stratified subsets (per class) of the train and test images embedded.
    encoder: Literal["efficientnet_lite0", "clip_vit_b32"] = "efficientnet_lite0"
    image_size: int = Field(default=64, ge=32, le=224)
    train_per_class: int | None = Field(default=None, ge=1)
    test_per_class: int | None = Field(default=None, ge=1)


def load_dataset(spec: DatasetConfig | str, root: str | None = None):
    """Decode a dataset once per process; later calls return the cached object.

    ``spec``: a scenario's ``[dataset]`` table, or a dataset name (default options).
    Returns an :class:`ArrayDataset`, or a :class:`~flowerbed.sims.graphs.GraphDataset`.
    """
    if isinstance(spec, str):
        spec = DatasetConfig(name=spec, root=root)
    if spec in ADOPTED:
        return ADOPTED[spec]
    return _load_cached(spec)


#: Datasets this process did not load itself: a simulation's driver loaded them and
#: shares them with its actors (read-only arrays in Ray's object store), by table.
ADOPTED: dict[DatasetConfig, Any] = {}


@functools.lru_cache(maxsize=4)
def _load_cached(spec: DatasetConfig):
    return DATASETS[spec.name](resolve_data_root(spec.root), spec)
