"""FRAug's server half (Chen et al., ICCV 2023, https://arxiv.org/abs/2205.14900;
official code HaokunChen245/FRAug). Spec: ``shared/specs/fraug.md``.

On top of FedBN: every round the server averages, weighted by training samples, the
classifier without its BatchNorm layers (they stay on each client) and the shared
class-conditional generator G (its BatchNorm too when ``generator_bn = "shared"``)::

    theta_shared <- sum_k n_k / n theta_k        G <- sum_k n_k / n G_k

G travels in the same ArrayRecord as the classifier, under the ``generator.`` prefix;
its initial weights are drawn from the run's seed and added before round 1. The RTNets
and class prototypes never leave the clients (:mod:`.client`).
"""

from __future__ import annotations

from collections.abc import Iterable

from flwr.app import ArrayRecord, ConfigRecord, Message
from flwr.serverapp import Grid

from flowerbed.strategies.common import ParamsFedAvg
from flowerbed.strategies.fraug.nets import GENERATOR, generator_for


class FRAug(ParamsFedAvg):
    name = "fraug"

    def with_generator(self, arrays: ArrayRecord) -> ArrayRecord:
        """The classifier's arrays plus G's initial weights, sized from the head (C, d)."""
        num_classes, dim = arrays["head.weight"].shape
        generator = generator_for(self.params.latent_dim, num_classes, dim, self.seed)
        return ArrayRecord({**arrays.to_torch_state_dict(),
                            **{GENERATOR + k: v for k, v in generator.state_dict().items()}})

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        if not any(key.startswith(GENERATOR) for key in arrays):
            arrays = self.with_generator(arrays)
        return super().configure_train(server_round, arrays, config, grid)
