"""One client's local work as a :class:`Job`, and the behaviours that wrap it.

A mod is ``mod(job, call_next)``, as Flower's client mods are ``mod(message, context,
call_next)``: it may change the job, call on, and act on the result; one that does
not call on replaces the step it wraps. The ClientApp composes the mods of the
strategies named in a message around two terminal steps, :func:`train_step` and
:func:`score_step`. Cross-cutting behaviours live here, once, for every strategy:

* :func:`keep_local`: parameters a client keeps in ``Context.state`` instead of taking
  the server's, and does not upload (FedPer's head, FED-PUB's masks, local-only's all);
* :func:`freeze`: parameters left out of training (FedBABU's head);
* :func:`proximal`: FedProx's (mu / 2) ||w - w_received||^2;
* :func:`keep_optimizer`: optimizer state (Adam's moments) kept across rounds;
* :func:`train_on_stored`: a training set the client built and stored (GGEUR's);
* :func:`add_loss` and :func:`report`: a strategy's loss term, and metrics of the trained model.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context
from torch import nn

from flowerbed.client.trainer import ExtraLoss, TrainSettings, fit, make_optimizer, matches
from flowerbed.sims.config import Scenario
from flowerbed.sims.partitions import scenario_partition
from flowerbed.sims.scoring import evaluate, group_accuracies, predict, score
from flowerbed.sims.task import ClientData, GraphData, round_seed

#: ``Context.state`` keys of the generic behaviours.
LOCAL_PARAMS = "local-params"
OPTIMIZER_STATE = "optimizer-state"
ROUNDS = "flowerbed"


@dataclass
class Job:
    """One ``train`` or ``evaluate`` call on a client, as the mods see it.

    ``data`` is the client's partition (train rows may be replaced by a mod); ``model``
    holds the received weights (``received`` has them all, also those of networks other
    than the model, such as a generator); ``kept`` names the model's parameters not
    uploaded; ``sent`` holds what a mod uploads besides the model (a generator's
    weights); ``metrics`` goes into the reply.
    """

    scenario: Scenario
    partition_id: int
    context: Context
    config: ConfigRecord
    data: ClientData | GraphData
    server_round: int = 0
    model: nn.Module | None = None
    received: dict[str, torch.Tensor] = field(default_factory=dict)
    settings: TrainSettings | None = None
    generator: torch.Generator | None = None
    frozen: tuple[str, ...] = ()
    kept: tuple[str, ...] = ()
    optimizer: torch.optim.Optimizer | None = None
    extra_losses: list[ExtraLoss] = field(default_factory=list)
    sent: dict[str, torch.Tensor] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    loss: float = 0.0

    def seed(self, server_round: int | None = None) -> int:
        """The seed of this client's work in ``server_round`` (default: this job's)."""
        return round_seed(self.scenario, self.server_round if server_round is None else server_round,
                          self.partition_id)

    def trainable(self) -> list[nn.Parameter]:
        return [p for n, p in self.model.named_parameters() if not matches(n, self.frozen)]

    def new_optimizer(self) -> torch.optim.Optimizer:
        return make_optimizer(self.trainable(), self.settings)

    def extra_loss(self) -> ExtraLoss | None:
        if len(self.extra_losses) <= 1:
            return self.extra_losses[0] if self.extra_losses else None
        return lambda model: sum(term(model) for term in self.extra_losses)


Step = Callable[[Job], None]
Mod = Callable[[Job, Step], None]


def compose(mods: list[Mod], step: Step) -> Step:
    """``mods[0]`` outermost, ``step`` innermost (the order of Flower's mod lists)."""
    for mod in reversed(mods):
        step = functools.partial(mod, call_next=step)
    return step


# --- the terminal steps ---------------------------------------------------------------


def train_step(job: Job) -> None:
    """Local training of the unfrozen parameters with the job's optimizer (a fresh one
    unless a mod kept it) and loss terms."""
    optimizer = job.optimizer or job.new_optimizer()
    job.loss = fit(job.model, job.data, job.settings, job.generator, optimizer, job.extra_loss())


def score_step(job: Job) -> None:
    """Loss and accuracy on the client's own test split; per class group where the
    scenario has groups (NaN for a group without a local test sample: every client
    replies the same keys, and the server averages each group over those that have it)."""
    job.loss, accuracy = score(job.model, job.data)
    job.metrics["accuracy"] = accuracy
    if isinstance(job.data, ClientData) and job.data.num_val:
        job.metrics["val_accuracy"] = evaluate(job.model, job.data.x_val, job.data.y_val)[1]
        job.metrics["num-val"] = job.data.num_val
    groups = scenario_partition(job.scenario).class_groups
    if groups and isinstance(job.data, ClientData):
        job.metrics.update(group_metrics("personalized_accuracy", predict(job.model, job.data.x_test),
                                         job.data, groups))


def group_metrics(prefix: str, pred: torch.Tensor, data: ClientData, groups: dict[str, list[int]]) -> dict[str, float]:
    found = group_accuracies(pred, data.y_test, groups)
    return {f"{prefix}_{g}": found.get(g, float("nan")) for g in groups}


# --- the behaviours -------------------------------------------------------------------


def local_state(context: Context) -> dict[str, torch.Tensor]:
    if LOCAL_PARAMS not in context.state.array_records:
        return {}
    return context.state.array_records[LOCAL_PARAMS].to_torch_state_dict()


def keep_local(patterns: tuple[str, ...], upload: bool = False, store: bool = True) -> Mod:
    """Parameters matching ``patterns`` (name fragments, ``*`` for all) come from the
    client's own state (its initial weights until it has stored some, never another
    client's) and are stored back after training (``store``); they are not uploaded
    unless ``upload`` (GGEUR's code loop keeps private models yet sends them)."""

    def mod(job: Job, call_next: Step) -> None:
        stored = local_state(job.context)
        if stored:
            job.model.load_state_dict(stored, strict=False)
        if not upload:
            job.kept = (*job.kept, *patterns)
        call_next(job)
        if store and patterns:
            kept = {k: v.detach().cpu().clone() for k, v in job.model.state_dict().items() if matches(k, patterns)}
            job.context.state[LOCAL_PARAMS] = ArrayRecord(kept)

    return mod


def freeze(patterns: tuple[str, ...]) -> Mod:
    """Parameters matching ``patterns`` are not trained."""

    def mod(job: Job, call_next: Step) -> None:
        job.frozen = (*job.frozen, *patterns)
        call_next(job)

    return mod


def proximal(mu: float) -> Mod:
    """FedProx's term (mu / 2) ||w - w_received||^2 on every local step."""

    def mod(job: Job, call_next: Step) -> None:
        job.settings = dataclasses.replace(job.settings, proximal_mu=mu)
        call_next(job)

    return mod


def keep_optimizer(job: Job, call_next: Step) -> None:
    """The optimizer's per-parameter state (Adam's moments) persists across rounds. Put
    it inside :func:`freeze`: the optimizer is built over the trainable parameters."""
    if job.optimizer is not None:  # an outer mod keeps it already
        call_next(job)
        return
    job.optimizer = job.new_optimizer()
    if OPTIMIZER_STATE in job.context.state.array_records:
        tensors = job.context.state.array_records[OPTIMIZER_STATE].to_torch_state_dict()
        saved = job.optimizer.state_dict()
        per_param: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in tensors.items():
            index, name = key.split(".", 1)
            per_param.setdefault(int(index), {})[name] = value
        saved["state"] = per_param
        job.optimizer.load_state_dict(saved)
    call_next(job)
    job.context.state[OPTIMIZER_STATE] = ArrayRecord({
        f"{index}.{name}": (value if torch.is_tensor(value) else torch.tensor(value)).detach().cpu()
        for index, entry in job.optimizer.state_dict()["state"].items() for name, value in entry.items()})


def train_on_stored(key: str, what: str) -> Mod:
    """Train on the set (``x``, ``y``) the client stored under ``key`` of its state
    (``what`` names it in the error when it is missing)."""

    def mod(job: Job, call_next: Step) -> None:
        if key not in job.context.state.array_records:
            raise RuntimeError(f"this client has no {what} in its state under {key!r}")
        stored = job.context.state.array_records[key].to_torch_state_dict()
        device = job.data.x_train.device
        job.data = dataclasses.replace(job.data, x_train=stored["x"].to(device), y_train=stored["y"].to(device))
        call_next(job)

    return mod


def add_loss(term: Callable[[Job], ExtraLoss]) -> Mod:
    """A loss term built from the job (e.g. anchored at the received weights)."""

    def mod(job: Job, call_next: Step) -> None:
        job.extra_losses.append(term(job))
        call_next(job)

    return mod


def report(metrics: Callable[[Job], dict[str, Any]]) -> Mod:
    """Metrics of the job after the wrapped step, into the reply."""

    def mod(job: Job, call_next: Step) -> None:
        call_next(job)
        job.metrics.update(metrics(job))

    return mod


def settings(**changes: Any) -> Mod:
    """Training settings changed for this job (e.g. GGEUR's code loop: CE on softmax outputs)."""

    def mod(job: Job, call_next: Step) -> None:
        job.settings = dataclasses.replace(job.settings, **changes)
        call_next(job)

    return mod


# --- what every trained client reports ----------------------------------------------


def count_rounds(job: Job) -> dict[str, int]:
    """Rounds this client trained in and its first one, kept in its state across rounds
    (the simplest per-client state: a test checks it against the sampling)."""
    context, server_round = job.context, job.server_round
    if ROUNDS not in context.state.config_records:
        context.state[ROUNDS] = ConfigRecord({"rounds": 0, "first-round": 0})
    state = context.state.config_records[ROUNDS]
    state["rounds"] = int(state["rounds"]) + 1
    if int(state["first-round"]) == 0:
        state["first-round"] = server_round
    return {"state-rounds": int(state["rounds"]), "state-first-round": int(state["first-round"])}


def graph_scores(job: Job) -> dict:
    """Graphs: the trained model on the client's validation and test nodes (FED-PUB's protocol)."""
    if not isinstance(job.data, GraphData):
        return {}
    _, val = score(job.model, job.data, "val")
    _, test = score(job.model, job.data, "test")
    return {"val_accuracy": val, "test_accuracy": test, "num-val": int(job.data.val.sum()),
            "num-test": job.data.num_test}
