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
the personalized scoring (:mod:`.client`); the server scores the generic
heads (:meth:`FedLoGe.evaluation_variants`).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, Message, MetricRecord
from torch import nn

from flowerbed.strategies.common import ParamsFedAvg
from flowerbed.strategies.fedloge.maths import realign_global, sse_c_of
from flowerbed.strategies.fedloge.params import FedLoGeParams


class FedLoGe(ParamsFedAvg):
    """FedAvg of backbone and psi; SSE-C, local heads and GLA-FR as configured."""

    name = "fedloge"

    def __init__(self, params: FedLoGeParams, *, seed: int = 0, **fedavg: Any) -> None:
        etf_seed = seed if params.etf_seed is None else params.etf_seed
        super().__init__(params.model_copy(update={"etf_seed": etf_seed}), seed=seed, **fedavg)
        self.psi_norms: np.ndarray | None = None

    def sse_c(self, dim: int, num_classes: int) -> nn.Linear:
        return sse_c_of(self.params, dim, num_classes)

    def aggregate_train(self, server_round: int,
                        replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        arrays, metrics = super().aggregate_train(server_round, replies)
        if arrays is not None and "head.weight" in arrays:
            self.psi_norms = np.linalg.norm(arrays["head.weight"].numpy(), axis=1)
        return arrays, metrics

    def round_report(self) -> tuple[dict[str, float], dict[str, Any]]:
        """The aggregated psi's class-vector norms ||psi_c|| (C,): their smallest,
        largest and mean per round (a long tail shows as small tail-class norms, what
        GLA-FR's realignment equalises), all of them in the round's JSON."""
        if self.psi_norms is None:
            return {}, {}
        norms = self.psi_norms
        return ({"fedloge_psi_norm_min": float(norms.min()), "fedloge_psi_norm_max": float(norms.max()),
                 "fedloge_psi_norm_mean": float(norms.mean())}, {"psi_norms": norms.round(5).tolist()})

    def evaluation_variants(self, model: nn.Module) -> dict[str, nn.Module]:
        """The generic models to score besides the plain one (backbone + psi): backbone +
        SSE-C ("ssec") and backbone + GLA-FR's realigned psi ("glafr")."""
        psi: nn.Linear = model.head
        ssec = copy.deepcopy(model)
        ssec.head = self.sse_c(psi.in_features, psi.out_features)
        glafr = copy.deepcopy(model)
        glafr.head.weight.data = realign_global(psi.weight.data, self.params.glafr_scale)
        return {"ssec": ssec, "glafr": glafr}
