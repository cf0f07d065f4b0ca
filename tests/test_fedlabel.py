"""FedLabel and FixMatch: hidden labels never reach the training loss; beta above 1 is
labelled-only FedAvg; with the local teacher equal to the global one FedLabel is its
global-teacher ablation; the more confident teacher labels each sample; the weak and
strong views are what they say."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import requires_shared_data
from inprocess import run_in_process

from flowerbed.client.augment import PHOTOMETRIC, _photometric, cutout, random_affine, strong, weak
from flowerbed.sims import task
from flowerbed.sims.config import ConfigError, load_scenario, parse_scenario
from flowerbed.strategies import resolve_strategy
from flowerbed.strategies.fedlabel import client as fedlabel_client
from flowerbed.strategies.fedlabel.maths import confidence, select
from flowerbed.strategies.fedlabel.params import FedLabelParams
from flowerbed.strategies.fixmatch.server import pooled_rates

REPO = Path(__file__).resolve().parents[1]
COMPARED = ("global_accuracy", "global_loss", "personalized_accuracy", "personalized_loss")


def _scenario(tmp_path, *overrides, rounds: int = 2):
    """S2 (USPS, 10 clients, 10% labels) cut to 4 clients, 3 unlabelled steps a round;
    beta 0.3 so that pseudo-labels are used from the first round."""
    return load_scenario(REPO / "sims" / "fedlabel_usps.toml", [
        f"rounds={rounds}", "partition.num_clients=4", "sampling.min_clients=4",
        f"mlflow.tracking_uri='sqlite:///{tmp_path / 'mlflow.db'}'", *overrides])


def _semi(name: str, *options: str) -> list[str]:
    return [f"strategy.name='{name}'", f"strategy.{name}.unlabeled_steps=3", f"strategy.{name}.beta=0.3",
            *(f"strategy.{name}.{o}" for o in options)]


def _same(a, b, rounds=(1, 2)) -> bool:
    return all(a.history[r][k] == b.history[r][k] for r in rounds for k in COMPARED)


@requires_shared_data
def test_true_labels_of_unlabelled_samples_never_reach_the_training_loss(tmp_path, monkeypatch):
    honest, _ = run_in_process(_scenario(tmp_path, *_semi("fedlabel")))
    real = task.hidden_labels
    monkeypatch.setattr(task, "hidden_labels", lambda s, p: (real(s, p) + 1) % 10)
    poisoned, _ = run_in_process(_scenario(tmp_path, *_semi("fedlabel")))
    assert honest.history[2]["pseudo_label_rate"] > 0.1  # pseudo-labels were trained on
    assert _same(honest, poisoned)
    assert honest.history[2]["pseudo_label_accuracy"] != poisoned.history[2]["pseudo_label_accuracy"]


@requires_shared_data
@pytest.mark.parametrize("name", ["fixmatch", "fedlabel"])
def test_beta_above_one_is_labelled_only_fedavg(tmp_path, name):
    labelled_only, _ = run_in_process(_scenario(tmp_path, "strategy.name='fedavg'"))
    semi, _ = run_in_process(_scenario(tmp_path, f"strategy.name='{name}'", f"strategy.{name}.unlabeled_steps=3",
                                       f"strategy.{name}.beta=1.01"))
    assert semi.history[2]["pseudo_label_rate"] == 0.0
    assert _same(labelled_only, semi)
    used, _ = run_in_process(_scenario(tmp_path, *_semi(name)))
    assert not _same(labelled_only, used)


@requires_shared_data
def test_with_the_local_teacher_equal_to_the_global_one_fedlabel_is_fixmatch_with_the_global_teacher(
        tmp_path, monkeypatch):
    global_only, _ = run_in_process(_scenario(tmp_path, *_semi("fedlabel", "teachers='global'",
                                                               "consistency=false")))
    selecting, _ = run_in_process(_scenario(tmp_path, *_semi("fedlabel", "consistency=false")))
    assert not _same(global_only, selecting)  # the local teacher matters ...
    both = fedlabel_client.two_teachers
    monkeypatch.setattr(fedlabel_client, "two_teachers", lambda local, global_, params: both(global_, global_, params))
    forced, _ = run_in_process(_scenario(tmp_path, *_semi("fedlabel", "consistency=false")))
    assert _same(global_only, forced)  # ... and only through the selection


def test_the_more_confident_teacher_labels_each_sample():
    q_local = torch.tensor([[0.96, 0.02, 0.02], [0.40, 0.50, 0.10], [0.97, 0.02, 0.01], [0.34, 0.33, 0.33]])
    q_global = torch.tensor([[0.10, 0.88, 0.02], [0.01, 0.98, 0.01], [0.95, 0.03, 0.02], [0.33, 0.34, 0.33]])
    found = select(q_local, q_global, FedLabelParams(beta=0.95))
    assert found.local_wins.tolist() == [True, False, True, True]
    assert found.labels.tolist() == [0, 1, 0, 0]
    assert found.mask.tolist() == [True, True, True, False]
    # Consistency only where both agree and the mask holds, weighted s_other / s_selected,
    # towards the other teacher's distribution.
    assert torch.allclose(found.weight, torch.tensor([0.0, 0.5 / 0.98, 0.95 / 0.97, 0.0]))
    assert torch.equal(found.target[1], q_local[1]) and torch.equal(found.target[0], q_global[0])
    assert select(q_local, q_global, FedLabelParams(teachers="global")).labels.tolist() == [1, 1, 0, 1]


@pytest.mark.parametrize("kind", ["max_prob", "variance", "neg_entropy"])
def test_confidence_is_one_for_a_one_hot_and_lowest_for_uniform(kind):
    q = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25], [0.7, 0.1, 0.1, 0.1]])
    h = confidence(q, kind)
    assert h[0] == pytest.approx(1.0) and h[1] == pytest.approx(0.25 if kind == "max_prob" else 0.0, abs=1e-6)
    assert h[1] < h[2] < h[0]


def test_rates_pool_the_counts_of_all_clients():
    replies = [{"pseudo-seen": 100, "pseudo-masked": 10, "pseudo-correct": 9, "num-examples": 5},
               {"pseudo-seen": 300, "pseudo-masked": 90, "pseudo-correct": 45}]
    rates = pooled_rates(replies)
    assert rates == {"pseudo_label_rate": 0.25, "pseudo_label_accuracy": 0.54}  # not the mean of 0.9 and 0.5


@requires_shared_data
def test_previous_round_keeps_the_students_last_model_and_uploads_only_the_model(tmp_path):
    summary, grid = run_in_process(_scenario(tmp_path, *_semi("fedlabel", "local_teacher='previous_round'"),
                                             rounds=1))
    trains = [m for m in grid.delivered if m.metadata.message_type == "train"]
    assert len(trains) == 4
    for node, context in grid.contexts.items():
        kept = context.state.array_records[fedlabel_client.LAST_MODEL].to_torch_state_dict()
        assert set(kept) == set(trains[0].content["arrays"].keys())  # the whole model, nothing else
    first, second = (grid.contexts[n].state.array_records[fedlabel_client.LAST_MODEL].to_torch_state_dict()
                     for n in sorted(grid.contexts)[:2])
    assert any(not torch.equal(first[k], second[k]) for k in first)


def test_semi_supervised_strategies_need_images():
    scenario = parse_scenario({"rounds": 1, "dataset": {"name": "office_caltech10"}, "model": {"name": "mlp"},
                               "partition": {"kind": "domain"}, "strategy": {"name": "fedlabel"}})
    with pytest.raises(ConfigError, match=r"strategy\.name: 'fedlabel' needs dataset\.name"):
        resolve_strategy(scenario)


# --- the views ----------------------------------------------------------------------


def test_strong_view_is_seeded_in_range_and_differs_from_the_weak_one():
    x = torch.rand(32, 1, 16, 16)
    a, b = (strong(x, torch.Generator().manual_seed(1), flip=False) for _ in range(2))
    assert torch.equal(a, b) and a.shape == x.shape and 0.0 <= a.min() and a.max() <= 1.0
    assert not torch.equal(a, weak(x, torch.Generator().manual_seed(1), 2, flip=False))


def test_neutral_magnitudes_and_ranges_leave_the_image_alone():
    x = torch.rand(8, 1, 12, 12)
    half = torch.full((8,), 0.5)
    for name in ("brightness", "contrast", "sharpness"):  # blend factor 1: the image itself
        assert torch.allclose(_photometric(name, x, half), x, atol=1e-6), name
    assert torch.equal(_photometric("solarize", x, torch.full((8,), 1.01)), x)
    assert torch.allclose(random_affine(x, torch.Generator().manual_seed(0), 0.0, 0.0, 0.0), x, atol=1e-5)
    assert set(PHOTOMETRIC) == {"brightness", "contrast", "sharpness", "posterize", "solarize"}


def test_cutout_greys_one_square_of_half_the_side():
    x = torch.zeros(50, 1, 16, 16)
    out = cutout(x, torch.Generator().manual_seed(0))
    grey = (out == 0.5).sum(dim=(1, 2, 3))
    assert grey.max() == 64 and grey.min() >= 16  # 8 x 8, clipped at the border


def test_weak_view_flips_only_where_asked():
    x = torch.arange(16.0).view(1, 1, 4, 4).repeat(64, 1, 1, 1)
    assert torch.equal(weak(x, torch.Generator().manual_seed(0), 0, flip=False), x)
    flipped = weak(x, torch.Generator().manual_seed(0), 0, flip=True)
    mirrored = (flipped == x.flip(-1)).flatten(1).all(1)
    assert 10 < int(mirrored.sum()) < 54 and bool(((flipped == x).flatten(1).all(1) | mirrored).all())


def test_max_local_steps_stops_training_after_that_many_steps():
    from flowerbed.client.trainer import TrainSettings, make_optimizer, round_batches, round_steps, train_local

    x, y = torch.rand(40, 1, 4, 4), torch.randint(0, 3, (40,))

    def run(max_steps):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
        settings = TrainSettings(local_epochs=2, batch_size=8, lr=0.1, max_steps=max_steps)
        optimizer = make_optimizer(model.parameters(), settings)
        steps = []
        optimizer.register_step_post_hook(lambda *args: steps.append(1))
        train_local(model, x, y, settings, torch.Generator().manual_seed(0), optimizer)
        return len(steps), model[1].weight.detach().clone()

    assert run(3)[0] == 3
    assert run(None)[0] == 10 and torch.equal(run(None)[1], run(10)[1])
    assert not torch.equal(run(3)[1], run(None)[1])
    # Every loop (FRAug's, FedLoGe's) draws through round_batches, whose count round_steps says.
    for cap in (None, 3, 50):
        settings = TrainSettings(local_epochs=2, batch_size=8, lr=0.1, max_steps=cap)
        drawn = list(round_batches(x, y, settings, torch.Generator().manual_seed(0)))
        assert len(drawn) == round_steps(len(x), settings) == min(10, cap or 10)
