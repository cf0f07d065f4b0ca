"""FedLabel's client half (spec fedlabel.md §2.2, §2.5). The global teacher is the model
the client received; the local teacher is its model fitted to this round's labelled
data (or its model as it ended its previous round, kept in ``Context.state``). Only the
student is uploaded: nothing leaves the client beyond FedAvg's model."""

from __future__ import annotations

import copy
import itertools

import torch
from flwr.app import ArrayRecord
from torch import nn
from torch.nn import functional as F

from flowerbed.client.mods import Job, Mod, Step
from flowerbed.client.trainer import LossMean, Proximal, batches
from flowerbed.strategies.fedlabel.maths import select
from flowerbed.strategies.fedlabel.params import FedLabelParams
from flowerbed.strategies.fixmatch.client import FixMatchClient, pseudo_label_counts, two_phase_round
from flowerbed.strategies.fixmatch.maths import (Tally, Teacher, probabilities, unlabelled_batches, unlabelled_loss,
                                                 views)

#: ``Context.state`` key: the client's model as it ended its last round.
LAST_MODEL = "fedlabel-last-model"


def frozen(model: nn.Module) -> nn.Module:
    teacher = copy.deepcopy(model)
    teacher.requires_grad_(False)
    return teacher.eval()


def two_teachers(local: nn.Module, global_: nn.Module, params: FedLabelParams) -> Teacher:
    """Both teachers on the same weak view, eval mode, no gradient; then :func:`select`."""
    return lambda view: select(probabilities(local, view), probabilities(global_, view), params)


def last_model(job: Job) -> nn.Module | None:
    """The client's model from the end of its previous round, if it has one."""
    if LAST_MODEL not in job.context.state.array_records:
        return None
    model = copy.deepcopy(job.model)
    model.load_state_dict(job.context.state.array_records[LAST_MODEL].to_torch_state_dict())
    return frozen(model)


def single_loop_round(job: Job, params: FedLabelParams, global_teacher: nn.Module) -> Tally:
    """[RE-B]'s variant: each unlabelled step also takes a labelled batch (cycled),
    L = CE(f(weak(x_l)), y_l) + lambda_u (L_PL + L_cons); the local teacher is the live student."""
    model, s = job.model, job.settings
    optimizer = job.optimizer or job.new_optimizer()
    extra, anchor = job.extra_loss(), Proximal(model, s.proximal_mu)
    labelled = itertools.chain.from_iterable(
        batches(job.data.x_train, job.data.y_train, s, job.generator) for _ in itertools.count())
    teacher, tally, losses = two_teachers(model, global_teacher, params), Tally(), LossMean()
    x_u = job.data.x_unlabeled
    for rows in unlabelled_batches(len(x_u), params.unlabeled_batch_size, params.unlabeled_steps, job.generator):
        xb, yb = next(labelled)
        weak_view, strong_view = views(x_u[rows.to(x_u.device)], s, job.generator)
        found = teacher(weak_view)
        tally.add(rows, found)
        model.train()
        loss = F.cross_entropy(model(xb), yb) + params.lambda_u * unlabelled_loss(model(strong_view), found)
        loss = anchor(model, loss)
        loss = loss + extra(model) if extra else loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.add(loss.detach())
    job.loss = losses.mean()
    return tally


def fedlabel_round(params: FedLabelParams) -> Mod:
    """Replaces the generic training step; stores the student for ``previous_round``."""

    def mod(job: Job, call_next: Step) -> None:
        global_teacher = frozen(job.model)  # the received global model
        if params.schedule == "single_loop":
            tally = single_loop_round(job, params, global_teacher)
        else:
            kept = last_model(job) if params.local_teacher == "previous_round" else None
            tally = two_phase_round(job, params, lambda j: two_teachers(
                kept if kept is not None else frozen(j.model), global_teacher, params))
        pseudo_label_counts(job, tally)
        if params.local_teacher == "previous_round":
            job.context.state[LAST_MODEL] = ArrayRecord(
                {k: v.detach().cpu().clone() for k, v in job.model.state_dict().items()})

    return mod


class FedLabelClient(FixMatchClient):
    name = "fedlabel"
    params_type = FedLabelParams

    def round_mod(self, params: FedLabelParams) -> Mod:
        return fedlabel_round(params)
