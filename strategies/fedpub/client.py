"""FED-PUB's client half: masks and Adam state stay on the client, the paper's
regularisers join the loss, and the trained model reports its functional embedding
(the server's similarity input) and how sparse its masks are."""

from __future__ import annotations

from flowerbed.client.mods import Job, Mod, add_loss, keep_local, keep_optimizer, report
from flowerbed.strategies.contract import ClientHalf
from flowerbed.strategies.fedpub.maths import functional_embedding, mask_sparsity, penalty
from flowerbed.strategies.fedpub.params import FedPubParams

MASKS = ("mask",)


class FedPubClient(ClientHalf):
    name = "fedpub"
    params_type = FedPubParams

    def train_mods(self, params: FedPubParams, job: Job) -> list[Mod]:
        return [
            keep_local(MASKS),
            keep_optimizer,
            # The proximal term anchors at the received personalized model, from round 2 on.
            add_loss(lambda job: penalty(job.model, job.received, params.mask_l1, params.prox_l2,
                                         params.regularizers, with_proximal=job.server_round > 1)),
            report(lambda job: {
                "embedding": functional_embedding(job.model, params.proxy_seed, int(job.data.x.shape[1])),
                # lambda1 is also the eval-time prune threshold of the masks.
                "personalized_mask_sparsity": mask_sparsity(job.model, params.mask_l1),
            }),
        ]

    def evaluate_mods(self, params: FedPubParams, job: Job) -> list[Mod]:
        return [keep_local(MASKS, store=False)]
