"""Server halves of the baselines: Flower's own FedAvg and FedProx, and FedAvg variants
that differ only in what the client keeps, freezes or fine-tunes.

FedPer (Arivazhagan et al., 2019, https://arxiv.org/abs/1912.00818): the body is
averaged as in FedAvg, each client keeps its own classifier head::

    theta_body <- sum_k n_k / n * theta_body_k ;  theta_head_k stays on client k

Local-only: every client keeps its whole model; the server's average is never used
by a client, so the reported personalized accuracy is that of isolated training.

FedBABU (Oh, Kim, Yun, ICLR 2022, https://arxiv.org/abs/2106.06042): the head stays at
its (shared, random) initialisation during federated training and only the body is
learned and averaged; for personalization each client fine-tunes the head on its own
data before it is scored.

FedBN (Li et al., ICLR 2021, https://arxiv.org/abs/2102.07623): every BatchNorm layer
(affine parameters and running statistics) stays on its client, the rest is averaged;
under feature shift each client normalises with its own domain's statistics.

The server side of all four is FedAvg; :mod:`.client` holds what differs.

Robust aggregation, Flower's own strategies by name (clients train as in FedAvg):
FedMedian (the coordinate-wise median, Yin et al., 2018), FedTrimmedAvg (the
coordinate-wise mean after cutting a fraction ``beta`` at each end, Yin et al., 2018)
and Krum / Multi-Krum (the update(s) nearest to their n - f - 2 neighbours, Blanchard
et al., 2017).
"""

from __future__ import annotations

from typing import Any

from flwr.serverapp.strategy import FedAvg, FedMedian, FedProx, FedTrimmedAvg, Krum, MultiKrum

from flowerbed.strategies.baselines.params import FedProxParams, FedTrimmedAvgParams, KrumParams
from flowerbed.strategies.common import ParamsFedAvg
from flowerbed.strategies.contract import NoParams


def fedavg(params: NoParams, *, seed: int = 0, **sampling: Any) -> FedAvg:
    """Flower's FedAvg as it is: a client of Flower's examples joins these runs."""
    return FedAvg(**sampling)


def fedprox(params: FedProxParams, *, seed: int = 0, **sampling: Any) -> FedProx:
    """Flower's FedProx: mu travels in Flower's own ``proximal-mu`` config key."""
    return FedProx(proximal_mu=params.proximal_mu, **sampling)


def fedmedian(params: NoParams, *, seed: int = 0, **sampling: Any) -> FedMedian:
    return FedMedian(**sampling)


def fedtrimmedavg(params: FedTrimmedAvgParams, *, seed: int = 0, **sampling: Any) -> FedTrimmedAvg:
    return FedTrimmedAvg(beta=params.beta, **sampling)


def krum(params: KrumParams, *, seed: int = 0, **sampling: Any) -> Krum | MultiKrum:
    if params.num_nodes_to_select == 1:
        return Krum(num_malicious_nodes=params.num_malicious_nodes, **sampling)
    return MultiKrum(num_malicious_nodes=params.num_malicious_nodes,
                     num_nodes_to_select=params.num_nodes_to_select, **sampling)


class FedPer(ParamsFedAvg):
    """Shared body, local head (every model of flowerbed names its classifier ``head``)."""

    name = "fedper"


class LocalOnly(ParamsFedAvg):
    """No collaboration: each client trains and is scored on its own model alone."""

    name = "local"


class FedBN(ParamsFedAvg):
    """FedAvg of everything but BatchNorm, which each client keeps."""

    name = "fedbn"


class FedBABU(ParamsFedAvg):
    """Body only during training (head frozen at its initialisation); the head is
    fine-tuned locally before personalized evaluation."""

    name = "fedbabu"
