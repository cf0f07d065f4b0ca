"""FedLoGe: Joint Local and Generic Federated Learning under Long-tailed Data.

Xiao et al., ICLR 2024 (https://arxiv.org/abs/2401.08977); official code
ZackZikaiXiao/FedLoGe. Spec: ``shared/specs/fedloge.md``.

Round t (the server side is FedAvg over the backbone theta and the auxiliary global
head psi, weighted by sample counts)::

    client k:  per batch, z = f_theta(x)
               (a) theta <- SGD on CE(SSE-C(z), y)          SSE-C: frozen sparse ETF
               (b) psi   <- SGD on CE(psi(z.detach()), y)
               (c) phi_k <- SGD on CE(phi_k(z.detach()), y) phi_k never leaves client k
    server:    theta, psi <- sum_k n_k / n * (theta_k, psi_k)

After (and, being training-free, at every) round, GLA-FR::

    generic:       psi~_c = 1.7 * psi_c / ||psi_c||
    personalized:  psi^_c = (psi_c / ||psi_c||) * ||phi_k,c||     (norm_transfer = "unit")
                   psi^_c = psi_c * ||phi_k,c||                   (norm_transfer = "code")
                   logits_k = psi^ z + b_psi + phi_k z + b_phi_k

The SSE-C is rebuilt from the run's seed by the server and every client (the same
bytes everywhere: float64 on CPU), so it is never sent. Clients do the training and
the personalized scoring (``client/fedloge.py``); the server scores the generic
heads (:meth:`FedLoGe.evaluation_variants`).
"""

from __future__ import annotations

import copy
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from flowerbed.client.fedloge import realign_global, sparse_etf, sse_c_head
from flowerbed.strategies.local_keys import ConfiguredFedAvg


class FedLoGeParams(BaseModel):
    """The ``[strategy]`` parameters of FedLoGe (defaults: spec §3 and §7)."""

    model_config = ConfigDict(extra="forbid")
    beta: float = Field(default=0.6, ge=0, lt=1)  # SSE-C sparsity
    etf_norm: float = Field(default=0.1, gt=0)  # target class-vector norm (a logit temperature)
    etf_steps: int = Field(default=10_000, ge=0)  # Adam refinement steps
    sse_c_bias: Literal["zero", "random_frozen"] = "zero"
    glafr_scale: float = Field(default=1.7, gt=0)
    # Personalized realignment: psi's unit directions (the paper's reading) or psi as it is (code).
    norm_transfer: Literal["unit", "code"] = "unit"
    # Test-time mask of the classes a client has no training sample of (code) or none.
    pm_mask: Literal["none", "train_count_rule"] = "none"


class FedLoGe(ConfiguredFedAvg):
    """FedAvg of backbone and psi; SSE-C, local heads and GLA-FR as configured."""

    def __init__(self, *, beta: float = 0.6, etf_norm: float = 0.1, etf_steps: int = 10_000,
                 sse_c_bias: str = "zero", glafr_scale: float = 1.7, norm_transfer: str = "unit",
                 pm_mask: str = "none", seed: int = 0, **fedavg: Any) -> None:
        super().__init__(**fedavg)
        self.beta, self.etf_norm, self.etf_steps, self.sse_c_bias = beta, etf_norm, etf_steps, sse_c_bias
        self.glafr_scale, self.seed = glafr_scale, seed
        shared = {"fedloge": True, "etf-beta": beta, "etf-norm": etf_norm, "etf-steps": etf_steps,
                  "etf-bias": sse_c_bias, "etf-seed": seed}
        self.train_config = shared
        self.evaluate_config = {**shared, "norm-transfer": norm_transfer, "pm-mask": pm_mask}

    def sse_c(self, dim: int, num_classes: int) -> nn.Linear:
        weight = sparse_etf(dim, num_classes, self.beta, self.etf_norm, self.etf_steps, self.seed)
        return sse_c_head(weight, self.sse_c_bias, self.seed)

    def evaluation_variants(self, model: nn.Module) -> dict[str, nn.Module]:
        """The generic models to score besides the plain one (backbone + psi): backbone +
        SSE-C ("ssec") and backbone + GLA-FR's realigned psi ("glafr")."""
        psi: nn.Linear = model.head
        ssec = copy.deepcopy(model)
        ssec.head = self.sse_c(psi.in_features, psi.out_features)
        glafr = copy.deepcopy(model)
        glafr.head.weight.data = realign_global(psi.weight.data, self.glafr_scale)
        return {"ssec": ssec, "glafr": glafr}
