"""FRAug: lambda_t = 0 is FedBN run for run; the RTNet, prototypes and BatchNorm stay
on the clients and differ between them; G is the sample-weighted mean of the clients'
G; synthetic embeddings carry the label they were made for."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import requires_shared_data
from inprocess import InProcessGrid

from flowerbed.client.app import build_client_app
from flowerbed.client.mods import Job
from flowerbed.server.app import run_server
from flowerbed.sims.config import load_scenario
from flowerbed.sims.models import batchnorm_keys, build_model
from flowerbed.strategies.fraug.client import PROTOTYPES, RTNET, FRAugWork, cyclic_labels, schedule
from flowerbed.strategies.fraug.nets import GENERATOR, mmd
from flowerbed.strategies.fraug.params import FRAugParams

REPO = Path(__file__).resolve().parents[1]


def _scenario(tmp_path, *overrides, rounds: int = 2):
    return load_scenario(REPO / "sims" / "fraug_mnist_usps.toml",
                         [f"rounds={rounds}", "client.local_epochs=2",
                          f"mlflow.tracking_uri='sqlite:///{tmp_path / 'mlflow.db'}'", *overrides])


class ReplyGrid(InProcessGrid):
    """Keeps every reply too."""

    def send_and_receive(self, messages, *, timeout=None):
        replies = list(super().send_and_receive(messages, timeout=timeout))
        self.replies = getattr(self, "replies", []) + replies
        return replies


def _run(scenario):
    grid = ReplyGrid(build_client_app(scenario), scenario.partition.num_clients)
    return run_server(grid, scenario, progress=None), grid


@requires_shared_data
def test_lambda_zero_is_fedbn_run_for_run(tmp_path):
    fedbn, _ = _run(_scenario(tmp_path, "strategy.name='fedbn'"))
    fraug, _ = _run(_scenario(tmp_path, "strategy.name='fraug'", "strategy.fraug.lambda_fixed=0.0"))
    for r in (1, 2):
        for key in ("train_loss", "personalized_accuracy", "personalized_loss", "global_accuracy"):
            assert fraug.history[r][key] == fedbn.history[r][key], (r, key)
    with_synthetic, _ = _run(_scenario(tmp_path, "strategy.name='fraug'"))
    assert with_synthetic.history[2]["train_loss"] != fedbn.history[2]["train_loss"]


@requires_shared_data
def test_only_the_shared_classifier_and_g_leave_a_client(tmp_path):
    """Train replies hold the classifier without BatchNorm and G without its BatchNorm
    (``generator_bn = "local"``); each client's RTNet, prototypes and BatchNorm stay in
    its state and differ from the other client's."""
    scenario = _scenario(tmp_path, "strategy.name='fraug'")
    summary, grid = _run(scenario)
    model = build_model("cnn_bn", (1, 16, 16), 10, 128)
    shared = {k for k in model.state_dict() if k not in batchnorm_keys(model)}
    trains = [r for r in grid.replies if r.metadata.message_type == "train"]
    assert len(trains) == 4
    for reply in trains:
        keys = set(reply.content["arrays"].keys())
        generator = {k for k in keys if k.startswith(GENERATOR)}
        assert keys - generator == shared
        assert generator and not any("running" in k or k.endswith((".net.1.weight", ".net.4.weight"))
                                     for k in generator)  # G's BatchNorm stays local
    first, second = (grid.contexts[node].state.array_records for node in sorted(grid.contexts))
    for key in (RTNET, PROTOTYPES, "local-params"):
        assert key in first and key in second
        a, b = first[key].to_torch_state_dict(), second[key].to_torch_state_dict()
        assert any(not torch.equal(a[k], b[k]) for k in a), key
    for diagnostic in ("generated_accuracy", "augmented_accuracy", "prototype_augmented_accuracy"):
        assert 0.0 <= summary.history[2][f"personalized_fraug_{diagnostic}"] <= 1.0
    assert summary.history[2]["personalized_fraug_rtnet_shift"] > 0.0


@requires_shared_data
def test_g_is_the_sample_weighted_mean_of_the_clients_g(tmp_path):
    from mlflow.tracking import MlflowClient

    scenario = _scenario(tmp_path, "strategy.name='fraug'", "client.local_epochs=1", rounds=1)
    # Whole domains (MNIST 1600, USPS 1440 training images): unequal clients, so the weights matter.
    scenario = scenario.model_copy(update={"partition": scenario.partition.model_copy(
        update={"samples_per_client": None})})
    summary, grid = _run(scenario)
    trains = [r for r in grid.replies if r.metadata.message_type == "train"]
    sizes = torch.tensor([float(r.content["metrics"]["num-examples"]) for r in trains])
    assert sizes[0] != sizes[1]
    aggregated = torch.load(MlflowClient(scenario.mlflow.tracking_uri).download_artifacts(
        summary.run_id, "global_model.pt", str(tmp_path)))
    for key in [k for k in aggregated if k.startswith(GENERATOR)]:
        mine = torch.stack([torch.from_numpy(r.content["arrays"][key].numpy()) for r in trains])
        expected = (sizes.view(-1, *[1] * (mine.dim() - 1)) * mine).sum(0) / sizes.sum()
        assert torch.allclose(aggregated[key], expected, atol=1e-6), key


def test_synthetic_embeddings_carry_their_class():
    """With the RTNet's residual zeroed, the prototype branch is exactly the prototype of
    each row's label and the sample branch the real embedding; unseen classes are left
    out of the prototype branch."""
    from flwr.app import ConfigRecord, Context, RecordDict

    from flowerbed.client.trainer import TrainSettings

    model = build_model("cnn_bn", (1, 16, 16), 4, 8)
    context = Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config={})
    scenario = load_scenario(REPO / "sims" / "quickstart.toml")
    job = Job(scenario, 0, context, ConfigRecord(), data=None, model=model,
              settings=TrainSettings(1, 8, 0.01, momentum=0.5))
    work = FRAugWork(job, FRAugParams())
    with torch.no_grad():
        work.rtnet.net[-1].weight.zero_()
        work.rtnet.net[-1].bias.zero_()
    work.update_prototypes(torch.randn(6, 8), torch.tensor([0, 0, 1, 1, 2, 2]))  # class 3 never seen
    work.generator.eval()
    work.rtnet.eval()
    labels = cyclic_labels(4, 8, 1)
    assert labels.tolist() == [1, 2, 3, 0, 1, 2, 3, 0]
    u, y = torch.randn(5, 8), torch.tensor([0, 1, 2, 1, 0])
    with torch.no_grad():
        around_prototypes, kept, around_samples = work.synthetic(u, y, labels, scale=1.0)
    assert kept.tolist() == [1, 2, 0, 1, 2, 0]
    assert torch.equal(around_prototypes, work.prototypes[kept])
    assert torch.equal(around_samples, u)


def test_lambda_schedule_follows_the_spec():
    digits = FRAugParams()
    assert schedule(digits, 1, 300) == (0.5, 1.0)  # gamma 0.002: 0.5 from round 0
    ramp = FRAugParams(gamma=0.01, feature_interpolation=True)
    lam, scale = schedule(ramp, 1, 300)
    assert lam == pytest.approx(0.0498, abs=1e-4) and scale == lam
    assert schedule(ramp, 232, 300)[0] == 0.5 and schedule(FRAugParams(lambda_fixed=0.0), 9, 300)[0] == 0.0


def test_mmd_is_zero_for_one_sample_and_grows_with_the_shift():
    x = torch.randn(64, 5, generator=torch.Generator().manual_seed(0))
    assert mmd(x, x).abs() < 1e-6
    assert mmd(x, x + 3.0) > mmd(x, x + 0.5) > mmd(x, x + 0.05)


def test_best_validation_picks_the_test_accuracy_of_the_best_validation_round():
    from flowerbed.server.app import best_validation_summary

    history = {0: {"personalized_accuracy": 0.1},  # before training: no client has scored yet
               1: {"personalized_val_accuracy": 0.5, "personalized_accuracy": 0.9},
               2: {"personalized_val_accuracy": 0.7, "personalized_accuracy": 0.6},
               3: {"personalized_val_accuracy": 0.7, "personalized_accuracy": 0.8}}
    assert best_validation_summary(history) == {"personalized_accuracy_best_val": 0.6,
                                                "best_val_round_evaluate": 2.0}


@requires_shared_data
def test_clients_score_a_held_out_validation_split_every_round(tmp_path):
    from mlflow.tracking import MlflowClient

    scenario = _scenario(tmp_path, "strategy.name='fedbn'", rounds=3)
    summary, grid = _run(scenario)
    evaluations = [r.content["metrics"] for r in grid.replies if r.metadata.message_type == "evaluate"]
    assert {int(m["num-val"]) for m in evaluations} == {160, 144}  # 10% of MNIST's 1600 and USPS's 1440
    logged = MlflowClient(scenario.mlflow.tracking_uri).get_run(summary.run_id).data.metrics
    best = int(logged["best_val_round_evaluate"])
    assert logged["personalized_accuracy_best_val"] == summary.history[best]["personalized_accuracy"]
    assert any(summary.history[r]["personalized_val_accuracy"] != summary.history[r]["personalized_accuracy"]
               for r in (1, 2, 3))
