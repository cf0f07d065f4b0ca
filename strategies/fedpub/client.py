"""FED-PUB's client half: masks and Adam state stay on the client, the model prunes at
the configured threshold, the paper's regularisers act on training (the mask L1 in the
loss or as a proximal step after each optimizer step), and the trained model reports
its functional embedding (the server's similarity input) and how sparse its masks are."""

from __future__ import annotations

from flowerbed.client.mods import Job, Mod, Step, add_loss, keep_local, keep_optimizer, report
from flowerbed.strategies.contract import ClientHalf
from flowerbed.strategies.fedpub.maths import functional_embedding, mask_sparsity, penalty, soft_threshold_
from flowerbed.strategies.fedpub.params import FedPubParams

MASKS = ("mask",)


def prune_at(threshold: float) -> Mod:
    """The masked model zeroes mask entries below ``threshold`` in eval mode (its
    functional embedding, its scores)."""

    def mod(job: Job, call_next: Step) -> None:
        job.model.set_prune(threshold)
        call_next(job)

    return mod


def decoupled_l1(mask_l1: float) -> Mod:
    """After every optimizer step, soft-threshold the masks by lr * ``mask_l1``. Put it
    inside :func:`keep_optimizer` (it hooks the job's optimizer)."""

    def mod(job: Job, call_next: Step) -> None:
        masks = {id(p) for p in job.model.masks()}

        def shrink(optimizer, args, kwargs) -> None:
            for group in optimizer.param_groups:
                soft_threshold_([p for p in group["params"] if id(p) in masks], group["lr"] * mask_l1)

        handle = job.optimizer.register_step_post_hook(shrink)
        try:
            call_next(job)
        finally:
            handle.remove()

    return mod


class FedPubClient(ClientHalf):
    name = "fedpub"
    params_type = FedPubParams

    def train_mods(self, params: FedPubParams, job: Job) -> list[Mod]:
        acting = params.regularizers == "paper"
        in_loss = params.mask_l1 if params.mask_l1_form == "loss" else 0.0
        return [
            prune_at(params.prune_threshold),
            keep_local(MASKS),
            keep_optimizer,
            *([decoupled_l1(params.mask_l1)] if acting and params.mask_l1_form == "decoupled" and params.mask_l1
              else []),
            # The proximal term anchors at the received personalized model, from round 2 on.
            add_loss(lambda job: penalty(job.model, job.received, in_loss, params.prox_l2,
                                         params.regularizers, with_proximal=job.server_round > 1)),
            report(lambda job: {
                "embedding": functional_embedding(job.model, params.proxy_seed, int(job.data.x.shape[1])),
                "personalized_mask_sparsity": mask_sparsity(job.model, params.prune_threshold),
            }),
        ]

    def evaluate_mods(self, params: FedPubParams, job: Job) -> list[Mod]:
        return [prune_at(params.prune_threshold), keep_local(MASKS, store=False)]
