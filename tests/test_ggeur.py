"""GGEUR: the pooled geometry, the generation rules and ablations, what the messages
carry, and a short run end to end (ServerApp and ClientApp, in process)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flowerbed.strategies.ggeur import GGEUR, GGEURParams
from flowerbed.strategies.ggeur.generation import ClassGeometry, augment, multi_domain, noise, single_domain
from flowerbed.strategies.ggeur.stats import (PooledMoments, class_statistics, covariances_of, eigen_geometry,
                                              guide_set, pack_symmetric, unpack_symmetric, upload_arrays)


def _clients(d: int = 6, sizes=(3, 40, 1, 17), seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(loc=rng.normal(size=d) * 3, scale=rng.uniform(0.5, 2, size=d), size=(n, d)) for n in sizes]


def _biased_cov(x: np.ndarray) -> np.ndarray:
    return np.cov(x, rowvar=False, bias=True)


def test_pooled_covariance_equals_the_covariance_of_the_union():
    parts = _clients()
    pooled = PooledMoments(parts[0].shape[1])
    for part in parts:
        stats = class_statistics(part, np.zeros(len(part), dtype=np.int64))
        pooled.add(int(stats["counts"][0]), stats["means"][0], stats["covs"][0])
    union = np.concatenate(parts)
    assert pooled.count == len(union)
    np.testing.assert_allclose(pooled.mean, union.mean(0), atol=1e-12)
    np.testing.assert_allclose(pooled.covariance, _biased_cov(union), atol=1e-12)


def test_the_between_client_mean_term_matters():
    """Without it (the average of the client covariances) the spread is underestimated."""
    parts = _clients()
    union = np.concatenate(parts)
    within = sum(len(p) * _biased_cov(p) for p in parts) / len(union)
    assert np.trace(_biased_cov(union)) > np.trace(within) + 1.0


@pytest.mark.parametrize("upload", ["full", "packed", "eigen"])
def test_every_upload_format_gives_back_the_client_covariances(upload):
    x = _clients(d=5, sizes=(30,))[0]
    y = np.repeat([0, 1, 2], 10)
    stats = class_statistics(x, y)
    arrays = upload_arrays(stats, upload, eigenpairs=5)  # p = d: exact
    np.testing.assert_allclose(covariances_of(arrays, 5), stats["covs"], atol=1e-5)
    d = 5
    packed = pack_symmetric(stats["covs"])
    assert packed.shape == (3, d * (d + 1) // 2)
    np.testing.assert_array_equal(unpack_symmetric(packed, d), stats["covs"])


def test_guide_set_takes_the_largest_clients_up_to_the_threshold():
    counts = np.array([5, 50, 0, 30, 15])
    assert sorted(guide_set(counts, 0.8).tolist()) == [1, 3]  # 80 of 100
    assert sorted(guide_set(counts, 0.81).tolist()) == [1, 3, 4]
    assert guide_set(counts, 0.5).tolist() == [1]


def test_psd_repair_clips_negative_eigenvalues_and_orders_them():
    rng = np.random.default_rng(1)
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    cov = q @ np.diag([4.0, 2.0, 1.0, 0.5, -1e-3, -0.2]) @ q.T
    values, vectors = eigen_geometry(cov, None, "none")
    np.testing.assert_allclose(values, [4, 2, 1, 0.5, 0, 0], atol=1e-9)
    assert vectors.shape == (6, 6)
    values3, vectors3 = eigen_geometry(cov, 3, "none")
    assert values3.shape == (3,) and vectors3.shape == (6, 3)


def test_eigen_scale_code_touches_the_smallest_and_top10_the_largest():
    cov = np.diag(np.arange(1.0, 13.0))  # eigenvalues 1..12
    plain = eigen_geometry(cov, None, "none")[0]
    code = eigen_geometry(cov, None, "code")[0]
    top = eigen_geometry(cov, None, "top10")[0]
    assert code[0] == plain[0] and code[-1] == 5 * plain[-1]  # ascending order: smallest x5
    assert top[0] == 5 * plain[0] and top[-1] == plain[-1]


def _geometry(cov: np.ndarray, count: int = 100, prototypes: np.ndarray | None = None) -> ClassGeometry:
    values, vectors = eigen_geometry(cov, None, "none")
    protos = torch.from_numpy(prototypes).float() if prototypes is not None else torch.empty(0, cov.shape[0])
    return ClassGeometry(torch.from_numpy(values).double(), torch.from_numpy(vectors).double(),
                         float(np.trace(cov)), count, protos)


def _anisotropic(d: int = 4) -> np.ndarray:
    rng = np.random.default_rng(2)
    a = rng.normal(size=(d, d))
    return a @ a.T / d + np.diag([3.0, 0.0, 0.0, 0.0][:d])


@pytest.mark.parametrize("scale", ["sqrt_eigenvalue", "eigenvalue"])
def test_generated_noise_has_the_global_covariance(scale):
    """sqrt_eigenvalue: x_new ~ N(x, Sigma_c); eigenvalue (the paper's formula):
    covariance V diag(lambda^2) V^T."""
    cov = _anisotropic()
    geometry = _geometry(cov)
    eps = noise(geometry, 200_000, GGEURParams(noise_scale=scale), torch.Generator().manual_seed(0)).numpy()
    values, vectors = np.linalg.eigh(cov)
    expected = cov if scale == "sqrt_eigenvalue" else vectors @ np.diag(values ** 2) @ vectors.T
    np.testing.assert_allclose(np.cov(eps, rowvar=False), expected, atol=0.05 * np.abs(expected).max())


def test_isotropic_ablation_has_the_same_total_variance_and_resample_none():
    cov = _anisotropic()
    geometry = _geometry(cov)
    iso = noise(geometry, 100_000, GGEURParams(augment="isotropic"), torch.Generator().manual_seed(0)).numpy()
    emp = np.cov(iso, rowvar=False)
    np.testing.assert_allclose(emp, np.eye(4) * np.trace(cov) / 4, atol=0.03 * np.trace(cov))
    assert not noise(geometry, 10, GGEURParams(augment="resample"), torch.Generator()).any()


@pytest.mark.parametrize("augment", ["geometry", "isotropic"])
def test_noise_multiplier_scales_the_standard_deviation_of_the_same_draws(augment):
    geometry = _geometry(_anisotropic())

    def draw(k: float) -> torch.Tensor:
        return noise(geometry, 50, GGEURParams(augment=augment, noise_multiplier=k), torch.Generator().manual_seed(4))

    assert torch.equal(draw(2.0), 2.0 * draw(1.0))
    assert not draw(0.0).any()


def test_single_domain_fills_each_present_class_to_its_target():
    rng = np.random.default_rng(3)
    x = torch.from_numpy(rng.normal(size=(23, 4))).float()
    y = torch.tensor([0] * 1 + [1] * 12 + [2] * 10)  # class 3 absent: no anchor, skipped
    cov = _anisotropic()
    geometries = {c: _geometry(cov, count=n) for c, n in enumerate([40, 15, 10, 30])}
    x_aug, y_aug = augment(x, y, geometries, 4, GGEURParams(), torch.Generator().manual_seed(0))
    assert torch.bincount(y_aug, minlength=4).tolist() == [40, 15, 10, 0]
    assert torch.equal(x_aug[y_aug == 1][:12], x[y == 1])  # originals kept first
    fixed = augment(x, y, geometries, 4, GGEURParams(target_per_class=25), torch.Generator().manual_seed(0))[1]
    assert torch.bincount(fixed, minlength=4).tolist() == [25, 25, 25, 0]


def test_single_domain_resample_duplicates_real_samples():
    x = torch.arange(12.0).reshape(3, 4)
    new = single_domain(x, _geometry(_anisotropic(), count=50), 10, GGEURParams(augment="resample"),
                        torch.Generator().manual_seed(0))
    assert len(new) == 47
    assert all(any(torch.equal(row, real) for real in x) for row in new)


def test_multi_domain_rule_reaches_the_target_from_prototypes_too():
    cov = _anisotropic()
    prototypes = np.array([[10.0, 0, 0, 0], [0, 10.0, 0, 0]])
    settings = GGEURParams(rule="multi_domain", target=50, samples_per_anchor=5, local_keep=8, per_prototype=10)
    x = torch.zeros(3, 4)
    kept, new = multi_domain(x, _geometry(cov, prototypes=prototypes), settings, torch.Generator().manual_seed(0))
    assert len(kept) == 3 and len(new) == 28  # pool: 8 around local anchors + 2 x 10 around prototypes
    roomy = GGEURParams(rule="multi_domain", target=20, samples_per_anchor=5, local_keep=8, per_prototype=10)
    assert len(multi_domain(x, _geometry(cov, prototypes=prototypes), roomy, torch.Generator())[1]) == 17
    # A class the client never saw is generated around the other domains' prototypes alone.
    kept, new = multi_domain(x[:0], _geometry(cov, prototypes=prototypes), settings,
                             torch.Generator().manual_seed(0))
    assert len(kept) == 0 and len(new) == 20
    near = torch.cdist(new.float(), torch.from_numpy(prototypes).float()).min(dim=1).values
    assert float(near.max()) < 10  # around a prototype, not around the origin
    # Originals at or above the target: nothing generated, capped only on request.
    many = torch.randn(60, 4)
    assert [len(t) for t in multi_domain(many, _geometry(cov), settings, torch.Generator())] == [60, 0]
    capped = GGEURParams(rule="multi_domain", target=50, cap_originals=True)
    assert [len(t) for t in multi_domain(many, _geometry(cov), capped, torch.Generator())] == [50, 0]


def test_rank_deficient_class_with_fewer_samples_than_dimensions_does_not_crash():
    d = 50
    x = np.random.default_rng(4).normal(size=(3, d))  # rank <= 2
    stats = class_statistics(x, np.zeros(3, dtype=np.int64))
    values, vectors = eigen_geometry(stats["covs"][0], None, "none")
    assert (values >= 0).all() and (values[2:] < 1e-9).all()
    geometry = ClassGeometry(torch.from_numpy(values), torch.from_numpy(vectors), float(values.sum()), 40)
    new = single_domain(torch.from_numpy(x), geometry, 10, GGEURParams(), torch.Generator().manual_seed(0))
    assert new.shape == (37, d) and torch.isfinite(new).all()
    # The generated points stay in the class's affine span (its geometry).
    centred = (new - torch.from_numpy(x.mean(0))).numpy()
    basis = vectors[:, :2]
    np.testing.assert_allclose(centred, centred @ basis @ basis.T, atol=1e-6)


def _resolved(strategy: dict, model: str = "logreg"):
    from flowerbed.sims.config import parse_scenario
    from flowerbed.strategies import resolve_strategy

    return resolve_strategy(parse_scenario({
        "rounds": 1, "dataset": {"name": "digits"}, "partition": {"kind": "iid", "num_clients": 2},
        "model": {"name": model}, "strategy": strategy}))


def test_ggeur_composes_with_fedavg_and_fedprox_through_the_config():
    from flwr.serverapp.strategy import FedAvg, FedProx

    common = {"fraction_train": 1.0}
    wrapped = _resolved({"name": "fedprox+ggeur", "fedprox": {"proximal_mu": 0.1}}).build(seed=3, **common)
    assert isinstance(wrapped, GGEUR) and isinstance(wrapped.inner, FedProx)
    assert wrapped.inner.proximal_mu == 0.1 and wrapped.params == GGEURParams()
    table = _resolved({"name": "fedavg", "addons": ["ggeur"], "ggeur": {"augment": "isotropic", "loop": "code"}})
    assert table.method == "fedavg+ggeur(augment=isotropic,loop=code)"
    built = table.build(seed=0, **common)
    assert built.params.augment == "isotropic" and built.inner.weighted_by_key == "unit-weight"
    # A [strategy.ggeur] table alone switches nothing on: a file may keep options it does not use.
    assert type(_resolved({"name": "fedavg", "ggeur": {"augment": "isotropic"}}).build(seed=0, **common)) is FedAvg


def test_ggeur_config_errors_name_the_key():
    from flowerbed.sims.config import ConfigError

    with pytest.raises(ConfigError, match=r"strategy\.ggeur\.augment: 'gauss' is not allowed"):
        _resolved({"name": "fedavg+ggeur", "ggeur": {"augment": "gauss"}})
    with pytest.raises(ConfigError, match=r"strategy\.ggeur\.bogus: unknown key for strategy 'ggeur'"):
        _resolved({"name": "fedavg", "ggeur": {"bogus": 1}})
    with pytest.raises(ConfigError, match=r"strategy\.addons: 'ggeur' needs model\.name in"):
        _resolved({"name": "fedavg+ggeur"}, model="cnn")
    with pytest.raises(ConfigError, match=r"strategy\.addons: 'ggeur' does not compose with strategy 'fedloge'"):
        _resolved({"name": "fedloge+ggeur"}, model="mlp")


# --- end to end -----------------------------------------------------------------------


def _lds_scenario(uri: str, **strategy):
    from flowerbed.sims.config import parse_scenario

    return parse_scenario({
        "seed": 0, "rounds": 2,
        "dataset": {"name": "office_caltech10"},
        "partition": {"kind": "domain_dirichlet", "alpha": 0.1},
        "model": {"name": "logreg"},
        "strategy": {"name": "fedavg", "addons": ["ggeur"], "ggeur": strategy},
        "client": {"local_epochs": 1, "batch_size": 16, "lr": 0.001, "optimizer": "adam"},
        "sampling": {"min_clients": 4},
        "mlflow": {"experiment": "ggeur-sim", "tracking_uri": uri},
    })


def test_messages_carry_statistics_only_and_runs_repeat(tmp_path, monkeypatch):
    """Office-Caltech-LDS, 4 domain clients, 2 rounds: the stats replies hold exactly
    each client's class counts, means and packed covariances; the geometry goes back
    with the other domains' prototypes; train replies hold the model only; the same
    seed gives the same metrics."""
    from flowerbed.sims.task import client_data, new_model
    from flowerbed.server.grid import RosterGrid
    from inprocess import run_in_process

    seen: list = []
    original = RosterGrid.send_and_receive

    def spy(self, messages, *, timeout=None):
        messages = list(messages)
        replies = list(original(self, messages, timeout=timeout))
        seen.append((messages, replies, dict(self.partition_of)))
        return replies

    monkeypatch.setattr(RosterGrid, "send_and_receive", spy)
    scenario = _lds_scenario(f"sqlite:///{tmp_path / 'mlflow.db'}")
    first = run_in_process(scenario)[0]

    by_type = {}
    for messages, replies, partition_of in seen:
        by_type.setdefault(messages[0].metadata.message_type, []).append((messages, replies, partition_of))
    (_, stats_replies, partition_of), = by_type["query.ggeur_stats"]
    for reply in stats_replies:
        assert set(reply.content.keys()) == {"ggeur-stats", "info"}
        arrays = {k: v.numpy() for k, v in reply.content["ggeur-stats"].items()}
        assert set(arrays) == {"classes", "counts", "means", "packed"}
        data = client_data(scenario, partition_of[reply.metadata.src_node_id])
        x, y = data.x_train.numpy().astype(np.float64), data.y_train.numpy()
        expected = class_statistics(x, y)
        np.testing.assert_array_equal(arrays["counts"], expected["counts"])
        np.testing.assert_allclose(arrays["means"], expected["means"], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(covariances_of(arrays, x.shape[1]), expected["covs"], atol=1e-4)
    (geo_msgs, geo_replies, _), = by_type["query.ggeur_geometry"]
    assert all(int(r.content["metrics"]["num-generated"]) > 0 for r in geo_replies)
    for message in geo_msgs:
        arrays = message.content["ggeur-geometry"]
        own = next(r for r in stats_replies if r.metadata.src_node_id == message.metadata.dst_node_id)
        others = sum(len(r.content["ggeur-stats"]["classes"].numpy()) for r in stats_replies if r is not own)
        assert arrays["prototypes"].numpy().shape == (others, 800)
    model_keys = set(new_model(scenario).state_dict())
    for messages, replies, _ in by_type["train"]:
        # GGEUR's parameters travel as its one model, under its one key, and nothing else of it.
        assert all(GGEURParams.from_config(m.content["config"], "ggeur") == GGEURParams() for m in messages)
        # With Flower's server-round and the run's lr (deploy/CLIENTS.md).
        assert all(set(m.content["config"]) == {"server-round", "lr", "flowerbed.ggeur"} for m in messages)
        for reply in replies:
            assert set(reply.content.keys()) == {"arrays", "metrics"}
            assert set(reply.content["arrays"].keys()) == model_keys

    setup = first.history[0]
    assert setup["ggeur_multi_domain"] == 1.0 and setup["ggeur_bytes_up"] > 0
    # Every client ends up with all 10 classes, 50 each or its own originals if more.
    assert setup["ggeur_augmented_examples"] >= 4 * 10 * 50
    assert "global_accuracy_domain_mean" in first.history[2]

    second = run_in_process(scenario)[0]
    assert first.history[2]["global_accuracy_domain_mean"] == second.history[2]["global_accuracy_domain_mean"]
    assert first.history[2]["train_loss"] == second.history[2]["train_loss"]


def test_positive_control_classes_share_one_anisotropic_covariance_and_differ_only_in_quiet_directions():
    from types import SimpleNamespace

    from flowerbed.sims import synthetic

    data = synthetic.anisotropic_gaussians(SimpleNamespace(train_per_class=4000, test_per_class=1))
    q, std = synthetic.shared_covariance(np.random.default_rng(synthetic.GENERATOR_SEED))
    sigma = q @ np.diag(std ** 2) @ q.T
    means = np.stack([data.x_train[data.y_train == c].mean(axis=0) for c in range(synthetic.CLASSES)])
    residuals = data.x_train - means[data.y_train]
    np.testing.assert_allclose(np.cov(residuals, rowvar=False), sigma, atol=0.05 * synthetic.NUISANCE_STD ** 2)
    nuisance = q[:, :synthetic.NUISANCE]
    # The means' nuisance components are sampling error only (std 3 / sqrt(4000) ~ 0.05).
    assert np.abs(means @ nuisance).max() < 0.25
    assert np.linalg.norm(means @ q[:, synthetic.NUISANCE:], axis=1) == pytest.approx(
        np.full(synthetic.CLASSES, synthetic.MEAN_NORM), abs=0.05)
