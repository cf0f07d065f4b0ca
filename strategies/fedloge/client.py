"""FedLoGe's client half: the local update trains three heads on one backbone, and
the personalized model is the global head psi plus the client's own head phi_k, as
trained and as realigned by GLA-FR. Both steps replace the generic ones."""

from __future__ import annotations

import torch
from flwr.app import ArrayRecord, Context
from torch import nn
from torch.nn import functional as F

from flowerbed.client.mods import Job, Mod, Step, group_metrics
from flowerbed.sims.partitions import scenario_partition
from flowerbed.strategies.contract import ClientHalf
from flowerbed.strategies.fedloge.maths import feature_diagnostics, personalized_logits, sse_c_of, train_three_heads
from flowerbed.strategies.fedloge.params import FedLoGeParams

#: Where a client keeps its local head phi_k in ``Context.state``.
PHI = "fedloge-phi"


def local_head(context: Context, dim: int, num_classes: int, seed: int) -> nn.Linear:
    """phi_k from the client's state, or a fresh default-initialised one (seeded)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        phi = nn.Linear(dim, num_classes)
    if PHI in context.state.array_records:
        phi.load_state_dict(context.state.array_records[PHI].to_torch_state_dict())
    return phi


def _phi(job: Job) -> nn.Linear:
    psi: nn.Linear = job.model.head
    # Seeded by the client alone (round 0), so a client's first phi_k is the same in every run.
    return local_head(job.context, psi.in_features, psi.out_features, job.seed(0)).to(psi.weight.device)


def three_heads(params: FedLoGeParams) -> Mod:
    """One FedLoGe round on a client (model.body is f_theta, model.head is psi): replaces
    the generic training step."""

    def mod(job: Job, call_next: Step) -> None:
        psi: nn.Linear = job.model.head
        phi = _phi(job)
        sse_c = sse_c_of(params, psi.in_features, psi.out_features).to(psi.weight.device)
        job.loss = train_three_heads(job.model.body, psi, phi, sse_c, job.data.x_train, job.data.y_train,
                                     job.settings, job.generator)
        job.context.state[PHI] = ArrayRecord({k: v.detach().cpu().clone() for k, v in phi.state_dict().items()})
        job.metrics.update(feature_diagnostics(job.model.body, sse_c, job.data.x_train))

    return mod


@torch.no_grad()
def personal_logits(job: Job, params: FedLoGeParams, realigned: bool) -> torch.Tensor:
    """Logits (n_test, C) on the client's test split from psi + phi_k (plain) or from
    GLA-FR's realigned psi^ + phi_k; absent classes masked if ``pm_mask`` says so."""
    psi: nn.Linear = job.model.head
    phi = _phi(job)
    job.model.eval()
    z = job.model.body(job.data.x_test)
    absent = None
    if params.pm_mask == "train_count_rule":
        absent = torch.bincount(job.data.y_train, minlength=psi.out_features) == 0
    return personalized_logits(z, psi, phi, params.norm_transfer if realigned else None, absent)


def personalized_scores(params: FedLoGeParams) -> Mod:
    """psi + phi_k scored plain and realigned by GLA-FR, overall and per class group:
    replaces the generic scoring step."""

    def mod(job: Job, call_next: Step) -> None:
        data = job.data
        logits = personal_logits(job, params, realigned=False)
        plain = logits.argmax(dim=1)
        realigned = personal_logits(job, params, realigned=True).argmax(dim=1)
        job.loss = float(F.cross_entropy(logits, data.y_test)) if data.num_test else 0.0
        job.metrics["accuracy"] = _accuracy(plain, data.y_test)
        job.metrics["personalized_accuracy_glafr"] = _accuracy(realigned, data.y_test)
        groups = scenario_partition(job.scenario).class_groups
        job.metrics.update(group_metrics("personalized_accuracy", plain, data, groups))
        job.metrics.update(group_metrics("personalized_accuracy_glafr", realigned, data, groups))

    return mod


def _accuracy(pred: torch.Tensor, y: torch.Tensor) -> float:
    return float((pred == y).float().mean()) if len(y) else 0.0


class FedLoGeClient(ClientHalf):
    name = "fedloge"
    params_type = FedLoGeParams

    def train_mods(self, params: FedLoGeParams, job: Job) -> list[Mod]:
        return [three_heads(params)]

    def evaluate_mods(self, params: FedLoGeParams, job: Job) -> list[Mod]:
        return [personalized_scores(params)]
