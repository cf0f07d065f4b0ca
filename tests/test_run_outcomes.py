"""Honest outcomes: a run in which no update could be aggregated, or whose model
diverged, ends FAILED with a message that says so, keeping the rounds logged before."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from inprocess import InProcessGrid
from mlflow.tracking import MlflowClient
from test_untrusted_replies import BadClients

from flowerbed.client.app import build_client_app
from flowerbed.server.app import RunFailed, run_server
from flowerbed.sims.config import load_scenario

REPO = Path(__file__).resolve().parents[1]


def _failed_run(tmp_path, overrides, spoil=None):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    scenario = load_scenario(REPO / "sims" / "quickstart.toml", ["rounds=3", f"mlflow.tracking_uri='{uri}'",
                                                                  "mlflow.experiment='outcomes'", *overrides])
    clients = BadClients(build_client_app(scenario), spoil or {})
    with pytest.raises(RunFailed) as failure:
        run_server(InProcessGrid(clients, scenario.partition.num_clients), scenario, progress=None)
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("outcomes").experiment_id])
    return str(failure.value), run, client


def test_rounds_without_usable_updates_fail_the_run(tmp_path):
    message, run, client = _failed_run(tmp_path, ["sampling.max_skipped_rounds=2"],
                                       spoil={i: "nan" for i in range(10)})
    assert message.startswith("round 2: 2 round(s) in a row not applied, too few usable updates "
                              "(this one: 0 ok, 0 failed, 10 rejected")
    assert run.info.status == "FAILED"
    history = client.get_metric_history(run.info.run_id, "round_applied")
    assert [(m.step, m.value) for m in history] == [(1, 0.0), (2, 0.0)]


def test_a_round_with_too_few_usable_updates_is_not_applied(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    scenario = load_scenario(REPO / "sims" / "quickstart.toml", ["rounds=2", f"mlflow.tracking_uri='{uri}'"])
    # 6 of 10 bad in round 1 only: 4 usable < 0.5 x 10, so the model is not updated.
    clients = BadClients(build_client_app(scenario), {i: "nan" for i in range(6)})
    clients.rounds_spoiled = {1}
    summary = run_server(InProcessGrid(clients, 10), scenario, progress=None)
    assert [summary.history[r]["round_applied"] for r in (1, 2)] == [0.0, 1.0]
    for name, before in clients.received[1].items():
        np.testing.assert_array_equal(clients.received[2][name], before)


def test_a_diverged_model_fails_the_run(tmp_path):
    message, run, client = _failed_run(tmp_path, ["client.lr=1e10"])
    assert "diverged" in message and "client.lr" in message
    assert run.info.status == "FAILED"
    assert client.get_metric_history(run.info.run_id, "global_accuracy")  # round 0 kept, at least
