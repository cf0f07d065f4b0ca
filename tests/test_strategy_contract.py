"""The strategy contract: a strategy written in a test module joins at run time and runs
end to end; parameters travel as their model under one key; every scenario file takes
every strategy that fits its model; server hooks are a declared Protocol."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, MessageType
from inprocess import InProcessGrid, run_in_process
from pydantic import Field

from flowerbed.client.mods import Job, Mod, freeze, report
from flowerbed.sims.config import ConfigError, load_scenario, parse_scenario
from flowerbed.sims.task import new_model
from flowerbed.strategies import STRATEGIES, StrategyEntry, register, resolve_strategy, unregister
from flowerbed.strategies.common import ParamsFedAvg, combine
from flowerbed.strategies.contract import (ClientHalf, DefaultHooks, ServerHooks, StrategyParams, hooks_of,
                                           params_key)

REPO = Path(__file__).resolve().parents[1]
SAMPLING = {"fraction_train": 1.0, "fraction_evaluate": 1.0, "min_train_nodes": 2, "min_evaluate_nodes": 2,
            "min_available_nodes": 3}


# --- a toy strategy, written as a user would, outside the project ---------------------


class ServerStepParams(StrategyParams):
    step_scale: float = Field(default=1.0, ge=0)  # server learning rate on the averaged update


class ServerStep(ParamsFedAvg):
    """x <- x + s * (FedAvg(x_k) - x); clients train the head only."""

    name = "toy_server_step"

    def configure_train(self, server_round, arrays, config, grid):
        self.current = arrays
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round, replies):
        averaged, metrics = super().aggregate_train(server_round, replies)
        s = self.params.step_scale
        return combine([self.current, averaged], np.array([1.0 - s, s])), metrics


class ServerStepClient(ClientHalf):
    name = "toy_server_step"
    params_type = ServerStepParams

    def train_mods(self, params: ServerStepParams, job: Job) -> list[Mod]:
        return [freeze(("body",)), report(lambda job: {"toy-step-scale": params.step_scale})]


@pytest.fixture
def toy_strategy():
    # Ray's workers get the client halves inside the pickled ClientApp: by value, since
    # they cannot import this test module.
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    register(StrategyEntry("toy_server_step", ServerStep, ServerStepParams, ServerStepClient()))
    try:
        yield
    finally:
        unregister("toy_server_step")
        ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def _toy_scenario(tmp_path, step_scale: float, rounds: int = 2):
    return parse_scenario({
        "seed": 0, "rounds": rounds, "dataset": {"name": "digits"},
        "partition": {"kind": "dirichlet", "num_clients": 3, "alpha": 1.0},
        "model": {"name": "mlp", "hidden": 16},
        "strategy": {"name": "toy_server_step", "toy_server_step": {"step_scale": step_scale}},
        "client": {"local_epochs": 1, "batch_size": 16, "lr": 0.1},
        "mlflow": {"experiment": "toy", "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"},
    })


def test_a_strategy_registered_at_run_time_runs_two_rounds_end_to_end(toy_strategy, tmp_path):
    """On Ray, without touching a project file: the clients apply its mods (the body is
    frozen, the parameters arrive), and the server its aggregation."""
    from mlflow.tracking import MlflowClient

    from flowerbed.server.simulate import simulate

    scenario = _toy_scenario(tmp_path, step_scale=0.5)
    summary = simulate(scenario, progress=None)
    initial = new_model(scenario).state_dict()
    final = torch.load(MlflowClient(scenario.mlflow.tracking_uri).download_artifacts(
        summary.run_id, "global_model.pt", str(tmp_path)))
    assert torch.allclose(final["body.1.weight"], initial["body.1.weight"], atol=1e-6)  # frozen
    assert not torch.allclose(final["head.weight"], initial["head.weight"], atol=1e-3)
    for r in (1, 2):
        assert [m["toy-step-scale"] for m in summary.client_metrics[r]["train"].values()] == [0.5] * 3
    run = MlflowClient(scenario.mlflow.tracking_uri).get_run(summary.run_id)
    assert run.data.tags["method"] == "toy_server_step(step_scale=0.5)"
    assert run.data.params["strategy.toy_server_step.step_scale"] == "0.5"


def test_a_server_step_of_zero_keeps_the_initial_model(toy_strategy, tmp_path):
    summary, _ = run_in_process(_toy_scenario(tmp_path, step_scale=0.0, rounds=2))
    assert summary.history[2]["global_accuracy"] == summary.history[0]["global_accuracy"]


# --- parameters travel as their model ------------------------------------------------


@pytest.mark.parametrize("name", ["fedper", "local", "fedbabu", "fednova", "fedloge"])
def test_parameters_travel_as_their_model_under_one_key(name):
    """The train and evaluate configs hold Flower's server-round and the strategy's
    parameters model, as JSON under ``flowerbed.<name>``, and nothing else."""
    entry = STRATEGIES[name]
    params = entry.params()
    strategy = entry.server(params, seed=4, **SAMPLING)
    grid = InProcessGrid(client_app=None, num_nodes=3)
    arrays = ArrayRecord(new_model(load_scenario(REPO / "sims" / "quickstart.toml")).state_dict())
    for messages in (strategy.configure_train(1, arrays, ConfigRecord(), grid),
                     strategy.configure_evaluate(1, arrays, ConfigRecord(), grid)):
        for message in messages:
            config = message.content["config"]
            assert set(config) == {"server-round", params_key(name)}
            received = entry.params.from_config(config, name)
            # The run's seed resolves "the run's seed" options before they are sent.
            assert received == getattr(strategy, "params", params)


def test_flowers_fedprox_keeps_flowers_own_key():
    strategy = STRATEGIES["fedprox"].server(STRATEGIES["fedprox"].params(proximal_mu=0.3), seed=0, **SAMPLING)
    grid = InProcessGrid(client_app=None, num_nodes=3)
    message = next(iter(strategy.configure_train(1, ArrayRecord(), ConfigRecord(), grid)))
    assert message.metadata.message_type == MessageType.TRAIN
    assert dict(message.content["config"]) == {"server-round": 1, "proximal-mu": 0.3}
    assert STRATEGIES["fedprox"].client.params(message.content["config"]).proximal_mu == 0.3


# --- every scenario file takes every strategy that fits its model -----------------------


SCENARIO_FILES = sorted((REPO / "sims").glob("*.toml"))


@pytest.mark.parametrize("path", SCENARIO_FILES, ids=[p.stem for p in SCENARIO_FILES])
def test_set_strategy_name_works_on_every_scenario_file(path):
    """``--set strategy.name=X`` keeps the file's data, model and client settings; X runs
    where it supports the model and the dataset, else a one-line error names the key."""
    for name, entry in STRATEGIES.items():
        scenario = load_scenario(path, [f"strategy.name={name!r}"])
        misfit = [(key, value) for key, value, needs in (("model.name", scenario.model.name, entry.models),
                                                         ("dataset.name", scenario.dataset.name, entry.datasets))
                  if needs and value not in needs]
        if misfit:
            with pytest.raises(ConfigError) as info:
                resolve_strategy(scenario)
            message, (key, value) = str(info.value), misfit[0]
            assert "\n" not in message and f"not {value!r}" in message and key in message
            continue
        resolved = resolve_strategy(scenario)
        assert resolved.entry is entry and resolved.build(seed=0, **SAMPLING) is not None
        assert scenario.client == load_scenario(path).client and scenario.dataset == load_scenario(path).dataset


@pytest.mark.parametrize("name", ["fedavg", "fedprox", "fedper", "local", "fedbabu", "fednova", "fedloge"])
def test_every_array_strategy_runs_a_round_on_a_scenario_file(name, tmp_path):
    """A short run of each strategy on the quickstart file (and FED-PUB's on its graph,
    in test_behaviour_unchanged): one round, in process."""
    scenario = load_scenario(REPO / "sims" / "quickstart.toml",
                             [f"strategy.name={name!r}", "rounds=1",
                              f"mlflow.tracking_uri='sqlite:///{tmp_path / 'm.db'}'"])
    summary, _ = run_in_process(scenario)
    assert summary.history[1]["clients_ok"] == scenario.partition.num_clients
    assert 0.0 <= summary.history[1]["personalized_accuracy"] <= 1.0


# --- server hooks ------------------------------------------------------------------------


def test_server_hooks_are_a_protocol_and_flowers_strategies_get_the_defaults():
    from flwr.serverapp.strategy import FedAvg

    from flowerbed.strategies.fedpub import FedPub, FedPubParams
    from flowerbed.strategies.ggeur import GGEUR, GGEURParams

    fedpub = FedPub(FedPubParams(), seed=0, **SAMPLING)
    assert isinstance(fedpub, ServerHooks) and hooks_of(fedpub) is fedpub
    plain = FedAvg(**SAMPLING)
    assert not isinstance(plain, ServerHooks) and isinstance(hooks_of(plain), DefaultHooks)
    wrapped = GGEUR(fedpub, GGEURParams())
    fedpub.last_alpha, fedpub.last_similarity, fedpub.last_nodes = np.eye(2), np.eye(2), [1, 2]
    assert wrapped.round_report() == fedpub.round_report()  # the wrapper passes its inner hooks on
    assert wrapped.round_report()[0]["fedpub_alpha_self"] == 1.0


# --- run naming -------------------------------------------------------------------------


def test_runs_carry_the_given_tags_and_name(tmp_path):
    from mlflow.tracking import MlflowClient

    from flowerbed.client.app import build_client_app
    from flowerbed.server.app import run_server

    scenario = load_scenario(REPO / "sims" / "quickstart.toml",
                             ["strategy.name='fedavg+ggeur'", "strategy.ggeur.augment='resample'", "rounds=1",
                              f"mlflow.tracking_uri='sqlite:///{tmp_path / 'm.db'}'"])
    grid = InProcessGrid(build_client_app(scenario), scenario.partition.num_clients)
    summary = run_server(grid, scenario, progress=None, tags={"study": "a"}, run_name="mine")
    run = MlflowClient(scenario.mlflow.tracking_uri).get_run(summary.run_id)
    assert run.info.run_name == "mine" and run.data.tags["study"] == "a"
    assert run.data.tags["method"] == "fedavg+ggeur(augment=resample)" and run.data.tags["scenario"] == "quickstart"
    assert run.data.params["strategy.ggeur.noise_scale"] == "sqrt_eigenvalue"  # defaults logged too


def test_bad_tag_is_a_one_line_error(capsys):
    from flowerbed.server.cli import EXIT_BAD_INPUT, main

    assert main(["run", str(REPO / "sims" / "quickstart.toml"), "--tag", "novalue"]) == EXIT_BAD_INPUT
    assert "--tag 'novalue': expected KEY=VALUE" in capsys.readouterr().err


def test_the_client_app_pickles_as_its_recipe_and_serves_the_same_replies():
    """Flower's Ray backend pickles the ClientApp with every message: ours travels as
    (scenario, client halves), not as closures, and the copy answers as the original."""
    import pickle

    from flwr.app import Context, Message, RecordDict
    from flwr.supercore.task_identity import TaskIdentity

    from flowerbed.client.app import build_client_app
    from flowerbed.sims.config import parse_scenario

    scenario = parse_scenario({"rounds": 1, "dataset": {"name": "digits"}, "model": {"name": "mlp"},
                               "strategy": {"name": "fedavg"},
                               "partition": {"kind": "iid", "num_clients": 2}})
    app = build_client_app(scenario)
    copy = pickle.loads(pickle.dumps(app))  # plain pickle: it cannot pickle a closure
    assert copy is not app and copy._recipe[0] == scenario

    def reply(client_app):
        TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
        message = Message(RecordDict(), dst_node_id=7, message_type="query")
        context = Context(run_id=1, node_id=7, node_config={"partition-id": 1, "num-partitions": 2},
                          state=RecordDict(), run_config={})
        return dict(client_app(message, context).content["metrics"])

    assert reply(copy) == reply(app) and reply(app)["partition-id"] == 1
