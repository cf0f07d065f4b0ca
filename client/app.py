"""The ClientApp: a generic shell around local training and scoring on one partition.

The same app runs in simulation (a Ray actor serving many virtual SuperNodes) and in
deployment (a SuperNode over gRPC); :mod:`flowerbed.client.node` finds its scenario,
partition and data. It names no strategy: each message's config says which client
halves apply (their parameters, under their keys), and their mods wrap the steps of
:mod:`flowerbed.client.mods`. A message without such keys gets plain local training,
as a client of Flower's examples would do.

* ``query``: reply ``partition-id`` and ``num-examples`` (the server's roster);
* ``query.<action>``: a client half's own query (a setup phase);
* ``train``: load ``arrays``, train locally, reply ``arrays`` and ``train_loss``;
* ``evaluate``: score the received model on the client's own label-matched test
  split, reply ``accuracy`` and ``loss`` (the personalized accuracy).
"""

from __future__ import annotations

import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from flowerbed.client.checkpoint import ClientStates
from flowerbed.client.mods import (Job, Mod, compose, count_rounds, graph_scores, keep_optimizer, report,
                                   score_step, train_step)
from flowerbed.client.node import job_of, load_received
from flowerbed.client.trainer import TrainSettings, matches
from flowerbed.sims.config import Scenario
from flowerbed.sims.task import client_device
from flowerbed.strategies import client_halves
from flowerbed.strategies.contract import ClientHalf


def _mods(halves: list[ClientHalf], job: Job, phase: str) -> list[Mod]:
    """The mods of the client halves this message names, outermost first."""
    return [mod for half in halves if half.key in job.config
            for mod in getattr(half, f"{phase}_mods")(half.params(job.config), job)]


class _BuiltClientApp(ClientApp):
    """A ClientApp that pickles as the recipe that built it. Flower's Ray backend pickles
    the app with every message; its handlers are closures, which cloudpickle would copy
    by value each time (about half of the driver's CPU in a small simulation)."""

    def __init__(self, scenario: Scenario | None, halves: list[ClientHalf], states: ClientStates | None) -> None:
        super().__init__(mods=[states] if states is not None else None)
        self._recipe = (scenario, halves, states)

    def __reduce__(self):
        return build_client_app, self._recipe


def build_client_app(scenario: Scenario | None = None, halves: list[ClientHalf] | None = None,
                     states: ClientStates | None = None) -> ClientApp:
    """A ClientApp bound to ``scenario``, or reading it from the run config if None. It
    serves the client halves registered when it is built (they travel with it to Ray's
    workers, also those a user registered at run time); with ``states``, each node's
    kept state is checkpointed there (a simulation that can be resumed)."""
    halves = client_halves() if halves is None else halves
    app = _BuiltClientApp(scenario, halves, states)

    @app.query()
    def roster(message: Message, context: Context) -> Message:
        job = job_of(message, context, scenario)
        metrics = MetricRecord({"partition-id": job.partition_id, "num-examples": job.data.num_train})
        return Message(RecordDict({"metrics": metrics}), reply_to=message)

    for half in halves:
        for action, handler in half.queries().items():
            def answer(message: Message, context: Context, handler=handler) -> Message:
                return Message(handler(message, context, job_of(message, context, scenario)), reply_to=message)
            app.query(action)(answer)

    @app.train()
    def train(message: Message, context: Context) -> Message:
        job = job_of(message, context, scenario)
        load_received(job, message)
        job.settings = TrainSettings.from_scenario(job.scenario.client, model=job.model)
        torch.manual_seed(job.seed())
        job.generator = torch.Generator().manual_seed(job.seed())
        mods = [report(count_rounds), report(graph_scores), *_mods(halves, job, "train")]
        if job.scenario.client.keep_optimizer:  # innermost: inside any freeze
            mods.append(keep_optimizer)
        compose(mods, train_step)(job)
        metrics = MetricRecord({"num-examples": job.data.num_train, "train_loss": job.loss,
                                "partition-id": job.partition_id,
                                "on-gpu": int(client_device(job.scenario).type == "cuda"), **job.metrics})
        arrays = ArrayRecord({**{k: v for k, v in job.model.state_dict().items() if not matches(k, job.kept)},
                              **job.sent})
        return Message(RecordDict({"arrays": arrays, "metrics": metrics}), reply_to=message)

    @app.evaluate()
    def evaluate(message: Message, context: Context) -> Message:
        job = job_of(message, context, scenario)
        load_received(job, message)
        compose(_mods(halves, job, "evaluate"), score_step)(job)
        metrics = MetricRecord({"num-examples": job.data.num_test, "loss": job.loss,
                                "partition-id": job.partition_id, **job.metrics})
        return Message(RecordDict({"metrics": metrics}), reply_to=message)

    return app


#: The app `flwr run` and SuperNodes load (scenario from the run config).
app = build_client_app()
