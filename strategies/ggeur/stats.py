"""GGEUR's class statistics: what a client uploads, and how the server pools them
into the covariance of the union (spec ``ggeur.md`` §2.2).

Shapes: embeddings ``x`` (n, d) float, labels ``y`` (n,) int64; a client with k
classes uploads ``counts`` (k,), ``means`` (k, d) and its covariances as ``covs``
(k, d, d), ``packed`` (k, d(d+1)/2, the upper triangle) or ``eig-values`` (k, p) +
``eig-vectors`` (k, d, p) (its top-p eigenpairs, an approximation).

Pooling, per class c over the contributing clients k::

    N_c = sum_k n_k^c ;  mu_c = sum_k n_k^c mu_k^c / N_c
    Sigma_c = (1/N_c) [ sum_k n_k^c Sigma_k^c + sum_k n_k^c (mu_k^c - mu_c)(mu_k^c - mu_c)^T ]
    (lambda_c, xi_c) = eigh(Sigma_c), descending, lambda clipped at 0
"""

from __future__ import annotations

import numpy as np
from flwr.app import Array, ArrayRecord

#: Names of the records in GGEUR's setup messages.
STATS_KEY = "ggeur-stats"
GEOMETRY_KEY = "ggeur-geometry"


def array_record(arrays: dict[str, np.ndarray]) -> ArrayRecord:
    """The arrays of a GGEUR message (statistics up, geometry down) as an ArrayRecord."""
    record = ArrayRecord()
    for key, value in arrays.items():
        record[key] = Array(np.ascontiguousarray(value))
    return record


def class_statistics(x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    """Per present class: ``classes`` (k,), ``counts`` (k,), ``means`` (k, d) and the
    biased (1/n) covariances ``covs`` (k, d, d), in float64."""
    x = np.asarray(x, dtype=np.float64)
    classes = np.unique(y)
    counts, means, covs = [], [], []
    for c in classes:
        rows = x[y == c]
        mean = rows.mean(axis=0)
        centred = rows - mean
        counts.append(len(rows))
        means.append(mean)
        covs.append(centred.T @ centred / len(rows))
    d = x.shape[1]
    return {"classes": classes.astype(np.int64), "counts": np.asarray(counts, dtype=np.int64),
            "means": np.asarray(means).reshape(-1, d), "covs": np.asarray(covs).reshape(-1, d, d)}


def pack_symmetric(covs: np.ndarray) -> np.ndarray:
    """(k, d, d) symmetric -> (k, d(d+1)/2): the upper triangle, row by row."""
    rows, cols = np.triu_indices(covs.shape[-1])
    return covs[:, rows, cols]


def unpack_symmetric(packed: np.ndarray, d: int) -> np.ndarray:
    """(k, d(d+1)/2) -> (k, d, d), the inverse of :func:`pack_symmetric`."""
    rows, cols = np.triu_indices(d)
    out = np.zeros((packed.shape[0], d, d), dtype=packed.dtype)
    out[:, rows, cols] = packed
    out[:, cols, rows] = packed
    return out


def top_eigenpairs(covs: np.ndarray, p: int) -> tuple[np.ndarray, np.ndarray]:
    """The p largest eigenpairs of each (d, d) matrix: values (k, p), vectors (k, d, p)."""
    values, vectors = np.linalg.eigh(covs)  # ascending
    return values[:, ::-1][:, :p].copy(), vectors[:, :, ::-1][:, :, :p].copy()


def upload_arrays(stats: dict[str, np.ndarray], upload: str, eigenpairs: int) -> dict[str, np.ndarray]:
    """The arrays a client sends (float32): counts, means, and its covariances in the
    ``upload`` format (``full``, ``packed`` or ``eigen``, the top ``eigenpairs``)."""
    out = {"classes": stats["classes"], "counts": stats["counts"], "means": stats["means"].astype(np.float32)}
    if upload == "full":
        out["covs"] = stats["covs"].astype(np.float32)
    elif upload == "packed":
        out["packed"] = pack_symmetric(stats["covs"]).astype(np.float32)
    else:
        values, vectors = top_eigenpairs(stats["covs"], min(eigenpairs, stats["covs"].shape[-1]))
        out["eig-values"], out["eig-vectors"] = values.astype(np.float32), vectors.astype(np.float32)
    return out


def covariances_of(arrays: dict[str, np.ndarray], d: int) -> np.ndarray:
    """The (k, d, d) covariances from an upload in any of its formats (float64)."""
    if "covs" in arrays:
        return arrays["covs"].astype(np.float64)
    if "packed" in arrays:
        return unpack_symmetric(arrays["packed"].astype(np.float64), d)
    values, vectors = arrays["eig-values"].astype(np.float64), arrays["eig-vectors"].astype(np.float64)
    return np.einsum("kdp,kp,kep->kde", vectors, values, vectors)



class PooledMoments:
    """Running (N, mu, N * Sigma) of a union, merged client by client (Chan et al.'s
    pairwise update: exact, and no (K, d, d) stack in memory)."""

    def __init__(self, d: int) -> None:
        self.count = 0
        self.mean = np.zeros(d)
        self.scatter = np.zeros((d, d))

    def add(self, count: int, mean: np.ndarray, cov: np.ndarray) -> None:
        if count <= 0:
            return
        total = self.count + count
        delta = mean - self.mean
        self.scatter += count * cov + np.outer(delta, delta) * (self.count * count / total)
        self.mean = self.mean + delta * (count / total)
        self.count = total

    @property
    def covariance(self) -> np.ndarray:
        """The biased (1/N) covariance of the union, (d, d)."""
        return self.scatter / max(self.count, 1)


def guide_set(counts: np.ndarray, threshold: float) -> np.ndarray:
    """Indices of the clients with the most samples of a class, taken in descending
    order until they hold at least ``threshold`` of its total (the code's guide set)."""
    order = np.argsort(-counts, kind="stable")
    cumulative = np.cumsum(counts[order])
    return order[: int(np.searchsorted(cumulative, threshold * counts.sum() - 1e-9)) + 1]


def eigen_geometry(cov: np.ndarray, num_eigenpairs: int | None, eigen_scale: str) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (p,) descending, clipped at 0 (the PSD repair), and eigenvectors (d, p)."""
    values, vectors = np.linalg.eigh(cov)  # ascending
    factors = np.linspace(5, 1, 10)
    if eigen_scale == "code":  # the code's factors land on the smallest eigenvalues
        values[:10] *= factors[: len(values)]
    values, vectors = values[::-1].copy(), vectors[:, ::-1]
    if eigen_scale == "top10":
        values[:10] *= factors[: len(values)]
    p = num_eigenpairs or len(values)
    return np.clip(values[:p], 0, None), np.ascontiguousarray(vectors[:, :p])
