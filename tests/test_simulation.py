"""End-to-end simulations on Flower's Simulation Engine (Ray): determinism, per-client
state, what reaches MLflow, and what a failing run keeps."""

from __future__ import annotations

import math

import pytest
from mlflow.tracking import MlflowClient

from flowerbed.server import app as server_app
from flowerbed.server.compare import compare
from flowerbed.server.simulate import simulate
from flowerbed.server.tracking import config_hash
from flowerbed.sims.config import parse_scenario

ROUND_METRICS = {
    "train_loss", "global_accuracy", "global_loss", "personalized_accuracy",
    "personalized_accuracy_weighted", "clients_ok", "clients_failed", "round_seconds",
    "bytes_sent", "bytes_received",
}


def scenario(tracking_uri: str, **changes):
    tree = {
        "seed": 3,
        "rounds": 3,
        "dataset": {"name": "digits"},
        "partition": {"kind": "dirichlet", "num_clients": 4, "alpha": 0.5},
        "model": {"name": "mlp", "hidden": 32},
        "strategy": {"name": "fedavg"},
        "client": {"local_epochs": 2, "batch_size": 32, "lr": 0.05, "momentum": 0.9},
        # Half the clients each round: sampling must be reproducible too.
        "sampling": {"fraction_train": 0.5, "fraction_evaluate": 1.0, "min_clients": 2},
        "mlflow": {"experiment": "sim-tests", "tracking_uri": tracking_uri},
    }
    for key, value in changes.items():
        section, _, leaf = key.partition("__")
        if leaf:
            tree[section][leaf] = value
        else:
            tree[section] = value
    return parse_scenario(tree)


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture(scope="module")
def two_runs(tracking_uri):
    """The same scenario and seed simulated twice."""
    s = scenario(tracking_uri)
    return s, simulate(s, progress=None), simulate(s, progress=None)


def _without_time(history):
    return {r: {k: v for k, v in m.items() if k != "round_seconds"} for r, m in history.items()}


def test_same_config_and_seed_give_identical_metrics(two_runs):
    _, first, second = two_runs
    assert _without_time(first.history) == _without_time(second.history)
    assert first.client_metrics == second.client_metrics
    assert first.run_id != second.run_id


def test_partial_participation_samples_half_the_clients(two_runs):
    s, first, _ = two_runs
    for r in range(1, s.rounds + 1):
        assert first.history[r]["clients_ok"] == 2
        assert len(first.client_metrics[r]["train"]) == 2
        assert len(first.client_metrics[r]["evaluate"]) == 4


def test_client_state_persists_across_rounds(two_runs):
    """Each client counts its training rounds in Context.state: the count it reports
    equals the rounds it was sampled in so far, and it remembers its first round."""
    s, first, _ = two_runs
    seen: dict[int, list[int]] = {}
    for r in range(1, s.rounds + 1):
        for partition, metrics in first.client_metrics[r]["train"].items():
            seen.setdefault(partition, []).append(r)
            assert metrics["state-rounds"] == len(seen[partition])
            assert metrics["state-first-round"] == seen[partition][0]
    assert any(len(rounds) > 1 for rounds in seen.values()), "no client trained twice"


def test_mlflow_run_holds_config_metrics_tags_and_model(two_runs, tracking_uri, tmp_path):
    s, first, _ = two_runs
    client = MlflowClient(tracking_uri)
    run = client.get_run(first.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["partition.alpha"] == "0.5"
    assert run.data.params["strategy.name"] == "fedavg"
    assert run.data.params["client.num_cpus"] == "1.0"
    for tag, value in {"strategy": "fedavg", "method": "fedavg", "scenario": "custom", "dataset": "digits",
                       "partition": "dirichlet", "seed": "3", "rounds": "3"}.items():
        assert run.data.tags[tag] == value
    assert run.data.tags["config_hash"] == config_hash(s) and run.info.run_name == "fedavg-digits-seed3"
    assert run.data.tags["git_commit"]
    assert ROUND_METRICS <= set(run.data.metrics)
    steps = [m.step for m in client.get_metric_history(first.run_id, "global_accuracy")]
    assert sorted(steps) == [0, 1, 2, 3]
    artifacts = {a.path for a in client.list_artifacts(first.run_id)}
    assert {"config.toml", "global_model.pt", "global_model", "partition"} <= artifacts
    # MLflow's model tooling loads the global model, and it holds the aggregated weights.
    import mlflow.pytorch
    import torch

    loaded = mlflow.pytorch.load_model(client.download_artifacts(first.run_id, "global_model", str(tmp_path)))
    aggregated = torch.load(client.download_artifacts(first.run_id, "global_model.pt", str(tmp_path)))
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in aggregated.items())
    assert {a.path for a in client.list_artifacts(first.run_id, "partition")} == {
        "partition/clients.json", "partition/partition.png"}
    # Every client reply and every broadcast is counted.
    assert all(first.history[r]["bytes_sent"] > 0 and first.history[r]["bytes_received"] > 0
               for r in range(1, s.rounds + 1))


def test_personalized_accuracies_are_the_client_means(two_runs):
    _, first, _ = two_runs
    scored = first.client_metrics[3]["evaluate"].values()
    unweighted = sum(m["accuracy"] for m in scored) / len(scored)
    weighted = sum(m["accuracy"] * m["num-examples"] for m in scored) / sum(m["num-examples"] for m in scored)
    assert math.isclose(first.history[3]["personalized_accuracy"], unweighted)
    assert math.isclose(first.history[3]["personalized_accuracy_weighted"], weighted)


def test_training_learns(two_runs):
    _, first, _ = two_runs
    assert first.history[3]["global_accuracy"] > first.history[0]["global_accuracy"] + 0.2


def test_failed_run_is_marked_failed_and_keeps_its_metrics(tracking_uri, monkeypatch):
    real = server_app.evaluate_global
    calls = []

    def failing(models, test):
        calls.append(1)
        if len(calls) == 3:  # round 0, round 1, then fail in round 2
            raise RuntimeError("disk full")
        return real(models, test)

    monkeypatch.setattr(server_app, "evaluate_global", failing)
    s = scenario(tracking_uri, mlflow={"experiment": "sim-fail", "tracking_uri": tracking_uri})
    with pytest.raises(Exception, match="disk full"):
        simulate(s, progress=None)
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("sim-fail")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FAILED"
    steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "global_accuracy"))
    assert steps == [0, 1]
    assert client.get_metric_history(run.info.run_id, "train_loss")[0].step == 1


def test_compare_groups_by_method_and_never_averages_different_round_counts(two_runs, tracking_uri, tmp_path,
                                                                             capsys):
    """Two 3-round runs and one 2-round run of the same method: two rows, a note that
    says why, the table beside the PNG, and no run added to the store."""
    from inprocess import run_in_process

    run_in_process(scenario(tracking_uri, rounds=2))
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("sim-tests")
    before = len(client.search_runs([experiment.experiment_id]))
    out = tmp_path / "cmp.png"
    assert compare("sim-tests", tracking_uri, out, table_output=tmp_path / "cmp.md") == 0
    printed = capsys.readouterr().out
    rows = {line.split(" | ")[0]: line for line in printed.splitlines() if line.startswith("| custom / fedavg")}
    assert set(rows) == {"| custom / fedavg [2 rounds]", "| custom / fedavg [3 rounds]"}
    assert "| 2 | 3 |" in rows["| custom / fedavg [3 rounds]"] and "± 0.0000" in rows["| custom / fedavg [3 rounds]"]
    assert "note: custom / fedavg has runs of 2, 3 rounds" in printed
    assert out.stat().st_size > 1000 and "custom / fedavg [2 rounds]" in out.with_suffix(".md").read_text()
    assert len(client.search_runs([experiment.experiment_id])) == before
