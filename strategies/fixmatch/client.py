"""FixMatch's client half, and the two-phase round FedLabel reuses (spec fedlabel.md
§2.2): ``client.local_epochs`` passes over the labelled data (weak view, as every method
trains), then the unlabelled steps of :mod:`.maths` on the same optimizer."""

from __future__ import annotations

from collections.abc import Callable

from flowerbed.client.mods import Job, Mod, Step, proximal
from flowerbed.client.trainer import LossMean, Proximal, round_steps, train_local
from flowerbed.sims import task
from flowerbed.strategies.contract import ClientHalf
from flowerbed.strategies.fixmatch.maths import (Tally, Teacher, self_teacher, unlabelled_batches, unlabelled_loss,
                                                 views)
from flowerbed.strategies.fixmatch.params import FixMatchParams


def two_phase_round(job: Job, params: FixMatchParams, teacher_for: Callable[[Job], Teacher]) -> Tally:
    """Labelled passes, then the unlabelled steps with the teacher that ``teacher_for``
    makes once the labelled phase is over. A batch where no sample passes the mask makes
    no step (with momentum or weight decay a zero loss would still move the weights).
    Sets ``job.loss`` (the mean over both phases' steps); returns what the teacher said."""
    model, s = job.model, job.settings
    optimizer = job.optimizer or job.new_optimizer()
    extra = job.extra_loss()
    anchor = Proximal(model, s.proximal_mu)  # at the received weights, for the second phase
    labelled = train_local(model, job.data.x_train, job.data.y_train, s, job.generator, optimizer, extra)
    labelled_steps = round_steps(len(job.data.y_train), s)
    teacher, tally, losses = teacher_for(job), Tally(), LossMean()
    x_u = job.data.x_unlabeled
    for rows in unlabelled_batches(len(x_u), params.unlabeled_batch_size, params.unlabeled_steps, job.generator):
        weak_view, strong_view = views(x_u[rows.to(x_u.device)], s, job.generator)
        found = teacher(weak_view)
        tally.add(rows, found)
        if not bool(found.mask.any()):
            continue
        model.train()
        loss = anchor(model, unlabelled_loss(model(strong_view), found))
        loss = loss + extra(model) if extra else loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.add(loss.detach())
    job.loss = (labelled * labelled_steps + float(losses.total)) / max(labelled_steps + losses.count, 1)
    return tally


def pseudo_label_counts(job: Job, tally: Tally) -> None:
    """The round's pseudo-label counts into the reply, scored against the hidden true
    labels after training (analysis only: the training above never saw them)."""
    job.metrics.update(tally.counts(task.hidden_labels(job.scenario, job.partition_id)))


def fixmatch_round(params: FixMatchParams) -> Mod:
    """Replaces the generic training step: the student is its own teacher."""

    def mod(job: Job, call_next: Step) -> None:
        tally = two_phase_round(job, params, lambda j: self_teacher(j.model, params.beta))
        pseudo_label_counts(job, tally)

    return mod


class FixMatchClient(ClientHalf):
    name = "fixmatch"
    params_type = FixMatchParams

    def round_mod(self, params: FixMatchParams) -> Mod:
        """The mod that replaces the training step (FedLabel's half swaps it)."""
        return fixmatch_round(params)

    def train_mods(self, params: FixMatchParams, job: Job) -> list[Mod]:
        return [*([proximal(params.proximal_mu)] if params.proximal_mu else []), self.round_mod(params)]
