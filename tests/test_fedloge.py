"""FedLoGe: the sparse ETF, the three heads' gradients, GLA-FR's algebra, local heads."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from flowerbed.client.trainer import TrainSettings
from flowerbed.strategies.fedloge.maths import (
    etf_loss,
    personalized_logits,
    realign_global,
    realign_local,
    sparse_etf,
    sse_c_head,
    train_three_heads,
)
from flowerbed.strategies.fedloge import FedLoGe, FedLoGeParams


def _cosines(weight: torch.Tensor) -> torch.Tensor:
    unit = weight / weight.norm(dim=1, keepdim=True)
    return unit @ unit.t()


def test_dense_etf_has_equal_norms_and_equal_angles():
    weight = sparse_etf(32, 10, beta=0.0, steps=0, seed=3)
    assert torch.allclose(weight.norm(dim=1), torch.ones(10), atol=1e-5)
    off = _cosines(weight)[~torch.eye(10, dtype=torch.bool)]
    assert torch.allclose(off, torch.full_like(off, -1 / 9), atol=1e-5)


def test_sparsification_pattern_holds_through_refinement():
    raw = sparse_etf(32, 10, beta=0.6, steps=0, seed=3)
    refined = sparse_etf(32, 10, beta=0.6, steps=10_000, seed=3)
    zeros = raw == 0
    assert abs(float(zeros.float().mean()) - 0.6) < 0.01
    assert torch.all(refined[zeros] == 0)  # the zero pattern survives refinement
    assert float(etf_loss(refined.t().double(), 0.1)) < float(etf_loss(raw.t().double(), 0.1))
    assert torch.allclose(refined.norm(dim=1), torch.full((10,), 0.1), atol=0.02)
    sparse_etf.cache_clear()
    assert torch.equal(sparse_etf(32, 10, beta=0.6, steps=10_000, seed=3), refined)  # deterministic


def test_etf_needs_enough_dimensions():
    with pytest.raises(ValueError, match="feature size"):
        sparse_etf(4, 10, steps=0)


def _parts(seed: int = 0):
    torch.manual_seed(seed)
    body = nn.Sequential(nn.Linear(6, 12), nn.ReLU())
    psi, phi = nn.Linear(12, 3), nn.Linear(12, 3)
    sse_c = sse_c_head(sparse_etf(12, 3, steps=100, seed=seed))
    return body, psi, phi, sse_c


def test_sse_c_is_never_updated_while_psi_and_phi_are():
    body, psi, phi, sse_c = _parts()
    before = {name: p.detach().clone() for name, p in
              [("sse_c", sse_c.weight), ("psi", psi.weight), ("phi", phi.weight), ("body", body[0].weight)]}
    x, y = torch.randn(40, 6), torch.randint(0, 3, (40,))
    settings = TrainSettings(local_epochs=2, batch_size=8, lr=0.03, momentum=0.5)
    train_three_heads(body, psi, phi, sse_c, x, y, settings, generator=torch.Generator().manual_seed(0))
    assert torch.equal(sse_c.weight, before["sse_c"]) and not sse_c.weight.requires_grad
    for name, module in (("psi", psi.weight), ("phi", phi.weight), ("body", body[0].weight)):
        assert not torch.equal(module, before[name]), f"{name} was not trained"


def test_the_backbone_gets_no_gradient_from_psi_or_phi():
    body, psi, phi, sse_c = _parts()
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    z = body(x)
    loss = nn.functional.cross_entropy(psi(z.detach()), y) + nn.functional.cross_entropy(phi(z.detach()), y)
    loss.backward()
    assert body[0].weight.grad is None
    nn.functional.cross_entropy(sse_c(body(x)), y).backward()
    assert body[0].weight.grad is not None and body[0].weight.grad.abs().sum() > 0


def test_glafr_gives_every_generic_row_the_same_norm():
    psi = torch.tensor([[3.0, 4.0], [0.3, 0.4], [1.0, 0.0]])
    realigned = realign_global(psi, 1.7)
    assert torch.allclose(realigned.norm(dim=1), torch.full((3,), 1.7))
    assert torch.allclose(_cosines(realigned), _cosines(psi))  # directions kept


def test_personalized_logits_equal_the_formula_on_a_hand_made_example():
    psi, phi = nn.Linear(2, 2), nn.Linear(2, 2)
    with torch.no_grad():
        psi.weight.copy_(torch.tensor([[3.0, 4.0], [0.0, 2.0]]))
        psi.bias.copy_(torch.tensor([0.5, -0.5]))
        phi.weight.copy_(torch.tensor([[0.0, 1.0], [2.0, 0.0]]))  # row norms 1 and 2
        phi.bias.copy_(torch.tensor([0.1, 0.2]))
    z = torch.tensor([[1.0, 1.0]])
    # Paper ("unit"): psi rows to unit length, times phi's row norms: [0.6, 0.8] * 1, [0, 1] * 2.
    unit = personalized_logits(z, psi, phi, "unit")
    expected_unit = torch.tensor([[0.6 + 0.8 + 0.5 + 1.0 + 0.1, 2.0 - 0.5 + 2.0 + 0.2]])
    assert torch.allclose(unit, expected_unit)
    # Code: psi rows as they are, times phi's row norms: [3, 4] * 1, [0, 2] * 2.
    code = personalized_logits(z, psi, phi, "code")
    assert torch.allclose(code, torch.tensor([[7.0 + 0.5 + 1.1, 4.0 - 0.5 + 2.2]]))
    assert torch.allclose(realign_local(psi.weight, phi.weight, "code").norm(dim=1), torch.tensor([5.0, 4.0]))
    # The test-time mask removes the classes a client never trained on.
    masked = personalized_logits(z, psi, phi, "unit", absent=torch.tensor([False, True]))
    assert masked[0, 1] == -math.inf and masked.argmax() == 0


def test_generic_variants_are_the_sse_c_and_the_realigned_head():
    from flowerbed.sims.models import build_model

    strategy = FedLoGe(FedLoGeParams(etf_steps=50), seed=7)
    model = build_model("mlp2", (1, 8, 8), 10, hidden=16)
    variants = strategy.evaluation_variants(model)
    assert torch.equal(variants["ssec"].head.weight, sparse_etf(16, 10, 0.6, 1.0, 50, 7))
    assert torch.allclose(variants["glafr"].head.weight.norm(dim=1), torch.full((10,), 1.7))
    assert torch.equal(variants["glafr"].body[1].weight, model.body[1].weight)


def test_local_heads_stay_on_the_clients_in_simulation(tmp_path):
    """A short FedLoGe run: phi_k never reaches the server (only backbone and psi are
    aggregated), and GLA-FR's generic and personalized accuracies are logged."""
    from mlflow.tracking import MlflowClient

    from inprocess import run_in_process
    from flowerbed.sims.config import parse_scenario

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    s = parse_scenario({
        "seed": 0, "rounds": 2,
        "dataset": {"name": "digits"},
        "partition": {"kind": "longtail_dirichlet", "num_clients": 4, "imbalance_factor": 10, "alpha": 1.0},
        "model": {"name": "mlp2", "hidden": 16},
        "strategy": {"name": "fedloge", "fedloge": {"etf_steps": 200}},
        "client": {"local_epochs": 1, "batch_size": 8, "lr": 0.03, "momentum": 0.5},
        "mlflow": {"experiment": "fedloge-sim", "tracking_uri": uri},
    })
    summary = run_in_process(s)[0]
    client = MlflowClient(uri)
    path = client.download_artifacts(summary.run_id, "global_model.pt", str(tmp_path))
    keys = set(torch.load(path))
    assert keys == set(s_model_keys(s))  # backbone + psi only: no phi, no SSE-C
    last = summary.history[2]
    for key in ("global_accuracy_glafr", "global_accuracy_ssec", "personalized_accuracy_glafr",
                "global_accuracy_glafr_head", "personalized_accuracy_tail"):
        assert key in last, key
        assert 0.0 <= last[key] <= 1.0
    # The diagnostics: the clients' feature norm and SSE-C confidence, psi's row norms
    # (those of the aggregated model the run saved).
    assert last["personalized_fedloge_feature_norm"] > 0
    assert 1 / 10 < last["personalized_fedloge_ssec_max_prob"] < 1
    norms = torch.load(path)["head.weight"].norm(dim=1)
    assert last["fedloge_psi_norm_min"] == pytest.approx(float(norms.min()), rel=1e-5)
    assert last["fedloge_psi_norm_max"] == pytest.approx(float(norms.max()), rel=1e-5)


def s_model_keys(scenario) -> list[str]:
    from flowerbed.sims.task import new_model

    return list(new_model(scenario).state_dict())


def test_group_metrics_of_clients_without_a_group_are_left_out_of_the_mean():
    """A client with no test sample of a class group replies NaN for it (every reply has
    the same keys, as Flower's aggregation requires); the round's mean skips it."""
    import math

    from flowerbed.client.mods import group_metrics
    from flowerbed.sims.task import ClientData
    from flowerbed.server.app import client_round_metrics
    from flowerbed.server.grid import Traffic

    groups = {"head": [0], "tail": [1]}
    empty = torch.zeros(0)
    only_head = ClientData(empty, empty.long(), empty, torch.zeros(2, 1), torch.tensor([0, 0]))
    replied = group_metrics("personalized_accuracy", torch.tensor([0, 1]), only_head, groups)
    assert replied["personalized_accuracy_head"] == 0.5 and math.isnan(replied["personalized_accuracy_tail"])

    other = {"personalized_accuracy_head": 1.0, "personalized_accuracy_tail": 0.25}
    traffic = Traffic(metrics={"evaluate": {
        0: {"num-examples": 2, "accuracy": 0.5, "loss": 1.0, **replied},
        1: {"num-examples": 4, "accuracy": 0.5, "loss": 1.0, **other},
    }})
    out = client_round_metrics(traffic)
    assert out["personalized_accuracy_head"] == 0.75 and out["personalized_accuracy_tail"] == 0.25
