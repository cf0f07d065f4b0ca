"""FED-PUB: proxy graph, similarity weights, personalized models, local masks, regularisers."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import requires_shared_data
from flwr.app import ArrayRecord, Message, Metadata, MetricRecord, RecordDict

from flowerbed.client.mods import Job, compose
from flowerbed.strategies.fedpub.client import decoupled_l1
from flowerbed.strategies.fedpub.maths import aggregation_weights, penalty, proxy_graph, similarity, soft_threshold_
from flowerbed.sims.masked_gcn import MaskedGCN
from flowerbed.strategies.common import combine
from flowerbed.strategies.fedpub import FedPub, FedPubParams

REPO = Path(__file__).resolve().parents[1]


def _digest(seed: int, features: int) -> str:
    x, edge_index = proxy_graph(seed, features)
    return hashlib.sha256(x.numpy().tobytes() + edge_index.numpy().tobytes()).hexdigest()


def test_proxy_graph_is_the_same_for_the_same_seed_in_another_process():
    code = ("from flowerbed.strategies.fedpub.maths import proxy_graph; import hashlib; "
            "x, e = proxy_graph(42, 16); "
            "print(hashlib.sha256(x.numpy().tobytes() + e.numpy().tobytes()).hexdigest())")
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert other == _digest(42, 16)
    assert _digest(42, 16) != _digest(43, 16)


def test_proxy_graph_shape_follows_the_spec():
    x, edge_index = proxy_graph(0, 8)
    assert tuple(x.shape) == (500, 8)
    block = edge_index // 100
    assert torch.equal(block[0], block[1]), "p_out = 0: no edge between the 5 blocks"
    degree = edge_index.shape[1] / 500
    assert 8 < degree < 12  # G(100, 0.1): about 9.9
    assert abs(float(x.mean())) < 0.05 and abs(float(x.std()) - 1) < 0.05


def test_weights_are_row_stochastic_and_equal_the_formula_on_three_clients():
    h = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    tau = 2.0
    alpha = aggregation_weights(h, tau)
    s = np.array([[1, 1 / np.sqrt(2), 0], [1 / np.sqrt(2), 1, 1 / np.sqrt(2)], [0, 1 / np.sqrt(2), 1]])
    expected = np.exp(tau * s) / np.exp(tau * s).sum(axis=1, keepdims=True)
    assert np.allclose(similarity(h), s)
    assert np.allclose(alpha, expected)
    assert np.allclose(alpha.sum(axis=1), 1) and (alpha > 0).all()


def test_tau_zero_is_plain_averaging_and_large_tau_picks_the_own_group():
    group_a = np.array([[1.0, 0.1], [1.0, 0.12]])
    group_b = np.array([[0.1, 1.0], [0.12, 1.0], [0.1, 1.05]])
    h = np.vstack([group_a, group_b])
    assert np.allclose(aggregation_weights(h, 0.0), 1 / 5)
    alpha = aggregation_weights(h, 500.0)
    assert alpha[:2, 2:].max() < 1e-6 and alpha[2:, :2].max() < 1e-6
    assert np.allclose(alpha[:2, :2].sum(axis=1), 1) and np.allclose(alpha[2:, 2:].sum(axis=1), 1)


def _reply(node: int, arrays: dict[str, np.ndarray], embedding: list[float], n: int) -> Message:
    metadata = Metadata(run_id=1, message_id=f"m{node}", src_node_id=node, dst_node_id=0,
                        reply_to_message_id="", group_id="", created_at=0.0, ttl=100.0, message_type="train")
    content = RecordDict({
        "arrays": ArrayRecord({k: torch.from_numpy(v) for k, v in arrays.items()}),
        "metrics": MetricRecord({"num-examples": n, "embedding": embedding, "train_loss": 0.1}),
    })
    return Message(content=content, metadata=metadata)


def test_each_client_gets_its_own_similarity_weighted_model():
    strategy = FedPub(FedPubParams(tau=3.0), seed=0, min_available_nodes=3, min_train_nodes=3)
    thetas = [np.full((2, 2), v, dtype=np.float32) for v in (1.0, 2.0, 10.0)]
    h = [[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]]
    replies = [_reply(node, {"w": t}, e, n) for node, t, e, n in zip((11, 12, 13), thetas, h, (10, 30, 60))]
    global_model, _ = strategy.aggregate_train(1, replies)
    alpha = aggregation_weights(np.array(h), 3.0)
    for i, node in enumerate((11, 12, 13)):
        mine = strategy.personalized[node]["w"].numpy()
        assert np.allclose(mine, sum(a * t for a, t in zip(alpha[i], thetas)))
    models = [strategy.personalized[n]["w"].numpy()[0, 0] for n in (11, 12, 13)]
    assert len(set(np.round(models, 5))) == 3, "personalized models should differ between clients"
    # The global model: training-node weighted average (the paper's reading).
    assert np.allclose(global_model["w"].numpy(), (10 * 1 + 30 * 2 + 60 * 10) / 100)


def test_combine_is_a_convex_combination_key_by_key():
    a = ArrayRecord({"w": torch.ones(3), "b": torch.zeros(1)})
    b = ArrayRecord({"w": 3 * torch.ones(3), "b": torch.ones(1)})
    out = combine([a, b], np.array([0.25, 0.75]))
    assert np.allclose(out["w"].numpy(), 2.5) and np.allclose(out["b"].numpy(), 0.75)


def _model_and_anchor():
    torch.manual_seed(0)
    model = MaskedGCN(6, 3, hidden=4)
    anchor = {k: v.detach().clone() + 0.5 for k, v in model.state_dict().items()}
    return model, anchor


def test_paper_regularisers_produce_gradients_and_code_noop_does_not():
    for mode, expect_grad in (("paper", True), ("code_noop", False)):
        model, anchor = _model_and_anchor()
        term = penalty(model, anchor, mask_l1=1e-3, prox_l2=1e-3, mode=mode, with_proximal=True)(model)
        assert float(term.detach()) > 0  # both modes move the reported loss
        if expect_grad:
            term.backward()
            assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
            # L1 on masks: d/dM = lambda1 * sign(M) (masks start at one).
            assert torch.allclose(model.conv1.mask.grad, torch.full_like(model.conv1.mask, 1e-3))
        else:
            assert not term.requires_grad


def _adam_steps(model: MaskedGCN, steps: int, lr: float, mask_l1: float, form: str) -> None:
    """``steps`` full-batch Adam steps of CE on a graph whose last three features are
    always zero (their conv1 mask entries get no cross-entropy gradient)."""
    x = torch.rand(8, 6)
    x[:, 3:] = 0
    edge_index = torch.tensor([[0, 1, 2, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6, 7]])
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    job = Job(scenario=None, partition_id=0, context=None, config=None, data=None, model=model,
              optimizer=torch.optim.Adam(model.parameters(), lr=lr))

    def train(job: Job) -> None:
        for _ in range(steps):
            job.optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(job.model(x, edge_index), y)
            if form == "loss":
                loss = loss + penalty(job.model, {}, mask_l1, 0.0, "paper", with_proximal=False)(job.model)
            loss.backward()
            job.optimizer.step()

    compose([decoupled_l1(mask_l1)] if form == "decoupled" else [], train)(job)


def test_decoupled_l1_is_adam_on_the_cross_entropy_then_the_soft_threshold():
    torch.manual_seed(0)
    plain, hooked = MaskedGCN(6, 3, hidden=4), MaskedGCN(6, 3, hidden=4)
    hooked.load_state_dict(plain.state_dict())
    torch.manual_seed(1)
    _adam_steps(plain, 1, lr=0.01, mask_l1=0.0, form="loss")
    soft_threshold_(plain.masks(), 0.01 * 0.5)
    torch.manual_seed(1)
    _adam_steps(hooked, 1, lr=0.01, mask_l1=0.5, form="decoupled")
    for a, b in zip(plain.masks(), hooked.masks()):
        assert torch.allclose(a, b)
    # Entries without a cross-entropy signal shrink by lr * lambda1 a step, to exactly zero.
    torch.manual_seed(0)
    model = MaskedGCN(6, 3, hidden=4)
    _adam_steps(model, 30, lr=0.01, mask_l1=2.0, form="decoupled")
    silent = model.conv1.mask.detach()[:, 3:]
    assert torch.allclose(silent, torch.full_like(silent, 1 - 30 * 0.01 * 2.0))
    _adam_steps(model, 30, lr=0.01, mask_l1=2.0, form="decoupled")
    assert (model.conv1.mask.detach()[:, 3:] == 0).all()


def test_l1_in_the_loss_moves_silent_masks_by_lr_whatever_lambda1_is():
    """The mechanism of the paper form's collapse: Adam divides the L1 gradient
    lambda1 * sign(M) by its own scale, so a mask entry without cross-entropy signal
    moves by lr a step at lambda1 = 1e-3 and at 1e-5 alike (1 - lr * t on every client)."""
    paths = []
    for mask_l1 in (1e-3, 1e-5):
        torch.manual_seed(0)
        model = MaskedGCN(6, 3, hidden=4)
        _adam_steps(model, 20, lr=0.01, mask_l1=mask_l1, form="loss")
        paths.append(model.conv1.mask.detach()[:, 3:])
    for silent in paths:  # (Adam's eps = 1e-8 is all that tells the two apart)
        assert torch.allclose(silent, torch.full_like(silent, 1 - 20 * 0.01), atol=1e-3)


def test_masked_gcn_prunes_small_masks_in_eval_mode_only():
    model, _ = _model_and_anchor()
    with torch.no_grad():
        model.head.mask[0, 0] = 1e-4
    model.train()
    assert float(model.head.effective_mask().detach()[0, 0]) == pytest.approx(1e-4)
    model.eval()
    assert float(model.head.effective_mask().detach()[0, 0]) == 0


def test_similarity_groups_clients_of_the_same_community_in_simulation(tmp_path):
    """Two SBM communities whose blocks carry permuted labels, three overlapping clients
    each: after a few rounds FED-PUB weights same-community peers above the others."""
    from mlflow.tracking import MlflowClient

    from inprocess import run_in_process
    from flowerbed.sims.config import parse_scenario

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    s = parse_scenario({
        "seed": 1, "rounds": 12,
        "dataset": {"name": "sbm_shift"},
        "partition": {"kind": "subgraph_overlap", "num_clients": 6, "num_communities": 2,
                      "clients_per_community": 3},
        "model": {"name": "masked_gcn", "hidden": 32},
        "strategy": {"name": "fedpub", "fedpub": {"tau": 10.0}},
        "client": {"local_epochs": 2, "lr": 0.01, "optimizer": "adam"},
        "sampling": {"fraction_evaluate": 1.0, "min_clients": 2},
        "mlflow": {"experiment": "fedpub-sbm", "tracking_uri": uri},
    })
    summary = run_in_process(s)[0]
    alpha = np.array(summary.strategy_reports[12]["alpha"])
    community = np.repeat([0, 1], 3)  # clients are in partition order: community-major
    same = community[:, None] == community[None, :]
    off_diagonal = ~np.eye(6, dtype=bool)
    assert alpha[same & off_diagonal].mean() > 1.5 * alpha[~same].mean()
    # Block structure: every client's largest off-diagonal weight is a same-community peer.
    for i in range(6):
        row = np.where(off_diagonal[i], alpha[i], -1)
        assert community[row.argmax()] == community[i]
    # Masks never left the clients: the aggregated model holds none.
    client = MlflowClient(uri)
    path = client.download_artifacts(summary.run_id, "global_model.pt", str(tmp_path))
    keys = torch.load(path).keys()
    assert keys and not any("mask" in k for k in keys)
    # Clients report after-training accuracy on their own nodes, and mask sparsity.
    assert 0 <= summary.history[12]["personalized_accuracy_trained"] <= 1
    assert "personalized_mask_sparsity" in summary.history[12]
    run = client.get_run(summary.run_id)
    best = int(run.data.metrics["best_val_round"])
    val = {r: m["personalized_val_accuracy_trained"] for r, m in summary.history.items() if r > 0}
    assert val[best] == max(val.values())
    assert run.data.metrics["personalized_accuracy_trained_best_val"] == pytest.approx(
        summary.history[best]["personalized_accuracy_trained"])


def _sbm_run(tmp_path, rounds: int, fedpub: dict):
    from inprocess import run_in_process
    from flowerbed.sims.config import parse_scenario

    return run_in_process(parse_scenario({
        "seed": 1, "rounds": rounds,
        "dataset": {"name": "sbm_shift"},
        "partition": {"kind": "subgraph_overlap", "num_clients": 6, "num_communities": 2,
                      "clients_per_community": 3},
        "model": {"name": "masked_gcn", "hidden": 32},
        "strategy": {"name": "fedpub", "fedpub": {"tau": 10.0, **fedpub}},
        "client": {"local_epochs": 2, "lr": 0.01, "optimizer": "adam"},
        "sampling": {"fraction_evaluate": 1.0, "min_clients": 2},
        "mlflow": {"experiment": "fedpub-prune", "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"},
    }))[0]


def test_the_configured_prune_threshold_is_what_the_model_prunes_at(tmp_path):
    """Masks start at one and move by at most lr a step: a threshold of 2 prunes every
    entry, which must show in the reported sparsity and, through the eval-mode model
    (the functional embedding, the scores), in the accuracy."""
    default = _sbm_run(tmp_path, 2, {})
    pruned = _sbm_run(tmp_path, 2, {"prune_threshold": 2.0})
    assert default.history[2]["personalized_mask_sparsity"] == 0.0
    assert pruned.history[2]["personalized_mask_sparsity"] == 1.0
    # With every mask zeroed, the logits are the head's bias: one class for all nodes.
    assert pruned.history[2]["personalized_accuracy"] != default.history[2]["personalized_accuracy"]


@requires_shared_data
def test_default_mask_l1_keeps_the_masks_personal_on_cora(tmp_path):
    """The collapse of issue 13: with the L1 in the loss (the paper's form) every client's
    masks follow the same path under Adam, the functional embeddings become alike and
    alpha uniform (sweep, seed 0, round 10: self-weight 0.134, similarity 0.888, falling
    to 0.111 / 0.960 by round 30). The default regulariser must keep alpha's diagonal
    and the clients apart (decoupled L1: 0.179 / 0.760; no L1: about 0.17 / 0.78)."""
    from inprocess import run_in_process
    from flowerbed.sims.config import load_scenario

    summary, _ = run_in_process(load_scenario(REPO / "sims" / "fedpub_cora_disjoint10.toml", [
        "rounds=10", f"mlflow.tracking_uri='sqlite:///{tmp_path / 'mlflow.db'}'"]))
    last = summary.history[10]
    assert last["fedpub_alpha_self"] > 0.15  # 1 / 10 = uniform = FedAvg
    assert last["fedpub_similarity_other"] < 0.85
