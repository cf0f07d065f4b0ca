"""GGEUR's generation, run once on each client with the geometry the server sends
back (spec ``ggeur.md`` §2.5).

For class c with global eigenpairs (lambda_m, xi_m) and an anchor x::

    geometry:   x_new = x + sum_m eps_m * s(lambda_m) * xi_m,   eps ~ N(0, I)
                s = sqrt  (noise_scale="sqrt_eigenvalue": x_new ~ N(x, Sigma_c), the code)
                s = id    (noise_scale="eigenvalue": the paper's Fig. 3 formula)
    isotropic:  x_new = x + sigma_c * eps,  sigma_c^2 = trace(Sigma_c) / d   (ablation)
    resample:   x_new = x                                                    (ablation)

``noise_multiplier`` k scales the noise of either (k = 0 adds none, as resample; k = 2 doubles
each draw's standard deviation): the noise-scale sweep.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from flowerbed.strategies.ggeur.params import GGEURParams


@dataclass
class ClassGeometry:
    """One class's global geometry: eigenvalues (p,) descending, eigenvectors (d, p),
    the trace of its covariance, its global sample count, the foreign prototypes (m, d)."""

    values: torch.Tensor
    vectors: torch.Tensor
    trace: float
    count: int
    prototypes: torch.Tensor = field(default_factory=lambda: torch.empty(0, 0))


def noise(geometry: ClassGeometry, num: int, settings: GGEURParams, generator: torch.Generator) -> torch.Tensor:
    """``num`` noise vectors (num, d) of the chosen augmentation for one class."""
    d = geometry.vectors.shape[0]
    if settings.augment == "resample":
        return torch.zeros(num, d, dtype=geometry.vectors.dtype)
    k = settings.noise_multiplier
    if settings.augment == "isotropic":
        sigma = (geometry.trace / d) ** 0.5
        return k * sigma * torch.randn(num, d, generator=generator, dtype=geometry.vectors.dtype)
    scale = geometry.values.clamp(min=0)
    scale = scale.sqrt() if settings.noise_scale == "sqrt_eigenvalue" else scale
    eps = torch.randn(num, len(scale), generator=generator, dtype=geometry.vectors.dtype)
    return k * ((eps * scale) @ geometry.vectors.T)


def _pick(pool: int, num: int, generator: torch.Generator) -> torch.Tensor:
    """``num`` distinct indices of ``range(pool)`` (all of them if ``num >= pool``)."""
    return torch.randperm(pool, generator=generator)[:num]


def _anchor_multiplicity(num_classes: int, n_cur: int) -> int:
    # The code generates G samples around every anchor and keeps a random subset;
    # G = 5000 / 500 (C = 10) or 500 / 50 (C >= 100) with fewer / at least 10 anchors.
    few = n_cur < 10
    if num_classes <= 10:
        return 5000 if few else 500
    return 500 if few else 50


def single_domain(x: torch.Tensor, geometry: ClassGeometry, num_classes: int, settings: GGEURParams,
                  generator: torch.Generator) -> torch.Tensor:
    """New samples (num_needed, d) that fill a class with local anchors ``x`` (n, d) up to
    the target: distinct anchors if there are enough, else anchors drawn without
    replacement from G copies of each (the code's pool, without generating it)."""
    target = settings.target_per_class or geometry.count
    needed = target - len(x)
    if needed <= 0 or len(x) == 0:
        return x[:0]
    if len(x) >= needed:
        anchors = _pick(len(x), needed, generator)
    else:
        copies = _anchor_multiplicity(num_classes, len(x))
        if copies * len(x) >= needed:
            anchors = _pick(copies * len(x), needed, generator) // copies
        else:
            anchors = torch.randint(len(x), (needed,), generator=generator)
    return x[anchors] + noise(geometry, needed, settings, generator)


def multi_domain(x: torch.Tensor, geometry: ClassGeometry, settings: GGEURParams,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(kept originals, new samples) for one class, spec §2.5 multi-domain:
    step 1 around the local samples, step 2 around the other domains' prototypes,
    then ``target - n`` of their union. A class with no local sample is filled from
    the prototypes alone (a random subset; the code takes the first ``target``)."""
    n, target = len(x), settings.target
    if n >= target:
        kept = x[_pick(n, target, generator)] if settings.cap_originals else x
        return kept, x[:0]
    parts = []
    if n:
        chosen = _pick(n * settings.samples_per_anchor, settings.local_keep, generator)
        anchors = x[chosen // settings.samples_per_anchor]
        parts.append(anchors + noise(geometry, len(anchors), settings, generator))
    for prototype in geometry.prototypes:
        parts.append(prototype + noise(geometry, settings.per_prototype, settings, generator))
    if not parts:
        return x, x[:0]
    pool = torch.cat(parts)
    return x, pool[_pick(len(pool), target - n, generator)]


def augment(x: torch.Tensor, y: torch.Tensor, geometries: dict[int, ClassGeometry], num_classes: int,
            settings: GGEURParams, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The augmented training set D~_k = kept originals + generated samples.

    Single-domain: classes absent on the client are skipped (no anchor); multi-domain:
    every class with local samples or a foreign prototype is filled to ``target``.
    """
    xs, ys = [], []
    for c in range(num_classes):
        local = x[y == c]
        geometry = geometries.get(c)
        if geometry is None:
            kept, new = local, local[:0]
        elif settings.rule == "multi_domain":
            kept, new = multi_domain(local, geometry, settings, generator)
        else:
            kept, new = local, single_domain(local, geometry, num_classes, settings, generator)
        xs += [kept, new.to(x.dtype)]
        ys.append(torch.full((len(kept) + len(new),), c, dtype=torch.int64))
    return torch.cat(xs), torch.cat(ys)


def geometries_from(arrays: dict[str, np.ndarray]) -> dict[int, ClassGeometry]:
    """Per class: the geometry message's arrays as :class:`ClassGeometry`, with the
    foreign prototypes (``proto-classes`` (m,), ``prototypes`` (m, d)) of that class."""
    proto_classes = arrays.get("proto-classes", np.zeros(0, dtype=np.int64))
    prototypes = torch.from_numpy(arrays.get("prototypes", np.zeros((0, arrays["vectors"].shape[1]), np.float32)))
    out = {}
    for i, c in enumerate(arrays["classes"].tolist()):
        out[c] = ClassGeometry(torch.from_numpy(arrays["values"][i]), torch.from_numpy(arrays["vectors"][i]),
                               float(arrays["traces"][i]), int(arrays["counts"][i]),
                               prototypes[torch.from_numpy(proto_classes == c)])
    return out


def augmented_set(x: torch.Tensor, y: torch.Tensor, arrays: dict[str, np.ndarray], params: GGEURParams,
                  num_classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The client's D~_k from its labelled rows (n, *input_shape) and the geometry
    message (``params.rule`` resolved by the server); inputs are flattened to vectors
    and the result given their shape again."""
    flat = x.detach().cpu().reshape(len(x), -1).float()
    x_aug, y_aug = augment(flat, y.cpu(), geometries_from(arrays), num_classes, params,
                           torch.Generator().manual_seed(seed))
    return x_aug.reshape(-1, *x.shape[1:]), y_aug
