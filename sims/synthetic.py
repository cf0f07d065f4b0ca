"""Synthetic data whose answer is known: positive controls for a method's mechanism."""

from __future__ import annotations

from typing import Any

import numpy as np

from flowerbed.sims.base import ArrayDataset

#: anisotropic_gaussians: dimension, classes, nuisance directions, their std, the others' std,
#: the distance of a class mean from the origin (in the quiet directions only).
DIM, CLASSES, NUISANCE, NUISANCE_STD, QUIET_STD, MEAN_NORM = 64, 10, 8, 3.0, 0.3, 1.5
GENERATOR_SEED = 1234  # the dataset is the same for every run; the scenario seed drives the rest


def shared_covariance(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Q (DIM, DIM) orthogonal and the std per column of Q: NUISANCE_STD for the first
    NUISANCE directions, QUIET_STD for the rest. Sigma = Q diag(std^2) Q^T."""
    q, _ = np.linalg.qr(rng.standard_normal((DIM, DIM)))
    std = np.full(DIM, QUIET_STD)
    std[:NUISANCE] = NUISANCE_STD
    return q, std


def anisotropic_gaussians(spec: Any) -> ArrayDataset:
    """GGEUR's positive control (issue 13): class c is N(mu_c, Sigma) with one shared,
    strongly anisotropic Sigma = Q diag(lambda) Q^T, lambda = 3^2 on 8 nuisance
    directions that carry no class information and 0.3^2 on the other 56, where the
    class means lie (norm 1.5, random directions). x: (N, 64) float32.

    A client with a few samples of a class sees them spread along the nuisance
    directions by chance, not by shape, so a linear head fitted to them can lean on
    those directions; samples drawn around them with the pooled Sigma teach it to ignore
    them, while isotropic noise of the same total variance (trace Sigma / 64 per
    direction, std ~1.1) swamps the quiet directions that separate the classes.
    ``train_per_class`` (default 100) and ``test_per_class`` (default 500) set the sizes.
    """
    rng = np.random.default_rng(GENERATOR_SEED)
    q, std = shared_covariance(rng)
    quiet = q[:, NUISANCE:]
    means = quiet @ rng.standard_normal((DIM - NUISANCE, CLASSES))
    means = MEAN_NORM * means / np.linalg.norm(means, axis=0, keepdims=True)  # (DIM, CLASSES)

    def draw(per_class: int) -> tuple[np.ndarray, np.ndarray]:
        y = np.repeat(np.arange(CLASSES), per_class)
        z = rng.standard_normal((len(y), DIM)) * std
        return (means.T[y] + z @ q.T).astype(np.float32), y.astype(np.int64)

    x_train, y_train = draw(spec.train_per_class or 100)
    x_test, y_test = draw(spec.test_per_class or 500)
    return ArrayDataset("anisotropic_gaussians", x_train, y_train, x_test, y_test, CLASSES)
