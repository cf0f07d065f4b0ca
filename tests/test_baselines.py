"""FedBABU, FedPer and local-only: what clients train, keep and share."""

from __future__ import annotations

import torch
from inprocess import run_in_process
from mlflow.tracking import MlflowClient

from flowerbed.client.trainer import TrainSettings, finetune
from flowerbed.sims.config import parse_scenario
from flowerbed.sims.task import client_data, new_model


def scenario(tmp_path, strategy: dict, rounds: int = 2, **params):
    return parse_scenario({
        "seed": 0, "rounds": rounds,
        "dataset": {"name": "digits"},
        "partition": {"kind": "dirichlet", "num_clients": 3, "alpha": 0.5},
        "model": {"name": "mlp", "hidden": 16},
        "strategy": {**strategy, **params},
        "client": {"local_epochs": 1, "batch_size": 16, "lr": 0.05},
        "mlflow": {"experiment": f"baseline-{strategy['name']}", "tracking_uri": f"sqlite:///{tmp_path / 'm.db'}"},
    })


def _global_model(tmp_path, s, run_id):
    path = MlflowClient(s.mlflow.tracking_uri).download_artifacts(run_id, "global_model.pt", str(tmp_path))
    return torch.load(path)


def test_fedbabu_trains_the_body_only_and_finetunes_the_head_for_evaluation(tmp_path):
    s = scenario(tmp_path, {"name": "fedbabu"}, fedbabu={"finetune_epochs": 2})
    summary = run_in_process(s)[0]
    initial = new_model(s).state_dict()
    final = _global_model(tmp_path, s, summary.run_id)
    # Frozen at its initialisation (averaging identical copies may move the last bit).
    assert torch.allclose(final["head.weight"], initial["head.weight"], atol=1e-6)
    assert not torch.equal(final["body.1.weight"], initial["body.1.weight"])
    # Fine-tuning changes the head only.
    model = new_model(s)
    tuned = finetune(model, client_data(s, 0), TrainSettings(1, 16, 0.05), ("head",), 2,
                     torch.Generator().manual_seed(0))
    assert not torch.equal(tuned.head.weight, model.head.weight)
    assert torch.equal(tuned.body[1].weight, model.body[1].weight)


def test_fedper_shares_no_head_and_local_only_shares_nothing_it_uses(tmp_path):
    per = run_in_process(scenario(tmp_path, {"name": "fedper"}))[0]
    final = _global_model(tmp_path, scenario(tmp_path, {"name": "fedper"}), per.run_id)
    assert set(final) == {"body.1.weight", "body.1.bias"}  # heads never left the clients
    local = run_in_process(scenario(tmp_path, {"name": "local"}, rounds=3))[0]
    # Isolated training: every client's personalized accuracy comes from its own model,
    # which keeps improving although nothing it receives is used.
    assert local.history[3]["personalized_accuracy"] > local.history[1]["personalized_accuracy"]
