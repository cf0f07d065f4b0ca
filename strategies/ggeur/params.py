"""GGEUR's options (the ``[strategy.ggeur]`` table); paper / code choices follow the
spec's table (§7), the default named first."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from flowerbed.strategies.contract import StrategyParams

#: Models on feature vectors, the ones GGEUR's embedding augmentation applies to.
GGEUR_MODELS = ("logreg", "mlp", "mlp2")


class GGEURParams(StrategyParams):
    """``[strategy.ggeur]``, used with ``strategy.addons = ["ggeur"]``."""

    # The augmentation, or an ablation with the same per-class targets.
    augment: Literal["geometry", "isotropic", "resample"] = "geometry"
    # "auto": multi-domain when every client reports a domain.
    rule: Literal["auto", "single_domain", "multi_domain"] = "auto"
    noise_scale: Literal["sqrt_eigenvalue", "eigenvalue"] = "sqrt_eigenvalue"  # code: N(x, Sigma); paper fig.: lambda
    noise_multiplier: float = Field(default=1.0, ge=0)  # scales the noise's std (geometry, isotropic)
    pool_clients: Literal["all", "guide_set"] = "all"  # paper / code (single-domain)
    guide_threshold: float = Field(default=0.8, gt=0, le=1)
    num_eigenpairs: int | None = Field(default=None, ge=1)  # p sent back (None: all d)
    # Client upload of each covariance: full d x d, its upper triangle (exact, half the
    # bytes), or its top upload_eigenpairs eigenpairs (approximate).
    upload: Literal["full", "packed", "eigen"] = "packed"
    upload_eigenpairs: int = Field(default=64, ge=1)
    # Multi-domain code's linspace(5, 1, 10) eigenvalue factors: "none"; "code" (on the 10
    # smallest, as its ascending eigh does: about a no-op); "top10" (the apparent intent).
    eigen_scale: Literal["none", "code", "top10"] = "none"
    target_per_class: int = Field(default=0, ge=0)  # single-domain; 0: the class's global count
    samples_per_anchor: int = Field(default=50, ge=1)  # multi-domain constants (spec §2.5)
    local_keep: int = Field(default=50, ge=0)
    per_prototype: int = Field(default=50, ge=0)
    target: int = Field(default=50, ge=1)
    cap_originals: bool = False
    # "fedavg": re-sync, sample-weighted, CE on logits; "code": the official loop (no
    # re-sync, unweighted mean, CE on softmax outputs).
    loop: Literal["fedavg", "code"] = "fedavg"
