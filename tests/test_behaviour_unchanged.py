"""The strategy-package refactor changed no metric: short runs of every strategy and
GGEUR variant, recorded (``tests/data/regression_metrics_<CPU capability>.json``, 3
rounds, seed 0, on their scenario files), give the same per-round metrics now (the
first 2 rounds are run and compared).

Runs go through the real ServerApp logic and ClientApp on an in-process grid (see
``inprocess.py``), so the comparison is exact and takes seconds per run. Left out of
the comparison: wall times, and the message sizes (``bytes_sent`` / ``bytes_received``:
configs now carry each strategy's parameters model as one JSON value). GGEUR's own
setup bytes (the statistics and geometry arrays) are compared.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path

import pytest
import torch
from conftest import requires_shared_data
from inprocess import run_in_process

from flowerbed.sims.config import load_scenario

REPO = Path(__file__).resolve().parents[1]
RECORDED_ROUNDS, RECORDED_SEED = 3, 0
# Rounds run and compared now: round 0 (setup, the initial model), round 1 and round 2
# (client state kept across rounds at work); nothing in a run depends on its length
# before its last round, so these equal the recording's first rounds.
CHECKED_ROUNDS = 2
# One recording per kind of CPU kernels, made by `record_regression.py`: AVX2 and AVX512
# round differently, and so do two AVX512 CPUs of different generations (the same code
# differed in the 8th digit here, and FedLoGe's norm-0.1 runs amplify that), so a
# recording carries the fingerprint of the kernels it was made on (`kernel_fingerprint`)
# and a machine is checked against the recording of its fingerprint, else against the
# one of its capability that has none. AVX512 (no fingerprint): before the
# strategy-package refactor, on the machine of that time; AVX2 at commit 186ebf8;
# AVX512 with a fingerprint at 200119e, each checked against the one before.
RECORDING_FILES = [json.loads(p.read_text())
                   for p in sorted((Path(__file__).parent / "data").glob("regression_metrics_*.json"))]


def kernel_fingerprint() -> str:
    """A digest of float32 results on one thread that depend on the CPU's kernels: a
    matmul, a convolution and a log-softmax, as the models' forward passes use them."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        gen = torch.Generator().manual_seed(0)
        x, w = torch.randn(64, 784, generator=gen), torch.randn(784, 256, generator=gen)
        images, kernels = torch.randn(8, 3, 28, 28, generator=gen), torch.randn(16, 3, 3, 3, generator=gen)
        out = torch.cat([torch.log_softmax(torch.relu(x @ w), dim=1).flatten(),
                         torch.nn.functional.conv2d(images, kernels).flatten()])
    finally:
        torch.set_num_threads(threads)
    return hashlib.sha256(out.numpy().tobytes()).hexdigest()[:16]


def recording_for(capability: str, fingerprint: str) -> dict | None:
    by_fingerprint = [r for r in RECORDING_FILES if r.get("kernel_fingerprint") == fingerprint]
    legacy = [r for r in RECORDING_FILES if r["cpu_capability"] == capability and "kernel_fingerprint" not in r]
    return (by_fingerprint or legacy or [None])[0]


RECORDINGS = {r["cpu_capability"]: r for r in RECORDING_FILES}  # one per capability, for the listing below
NOT_COMPARED = {"round_seconds", "ggeur_setup_seconds", "bytes_sent", "bytes_received"}
# Metrics added since the recording (and nothing else new): the clients' accuracy per domain,
# and on the validation split that the FRAug scenarios now hold out (training rows unchanged);
# FED-PUB's mean cross-client similarity; FedLoGe's feature norm, SSE-C confidence and psi's row norms;
# the replies rejected (train) and the evaluate replies counted apart; the clients that trained on a GPU.
ADDED = re.compile(r"personalized_accuracy_(mnist|usps|amazon|webcam|dslr|caltech)$|personalized_val_accuracy$"
                   r"|fedpub_similarity_other$|personalized_fedloge_(feature_norm|ssec_max_prob)$"
                   r"|fedloge_psi_norm_(min|max|mean)$|clients_rejected$|clients_(ok|failed|rejected)_evaluate$|round_applied$|clients_on_gpu$")

PAPER_L1 = ["strategy.fedpub.mask_l1_form='loss'", "strategy.fedpub.mask_l1=1e-3"]
# Case -> the same run in today's scenario syntax (the recording used the old one,
# kept in the JSON as "old_overrides").
CASES = {
    "quickstart/fedavg": [],
    "quickstart/fedprox": ["strategy.name='fedprox'", "strategy.fedprox.proximal_mu=0.1"],
    "quickstart/fedper": ["strategy.name='fedper'"],
    "quickstart/local": ["strategy.name='local'"],
    "quickstart/fedbabu": ["strategy.name='fedbabu'", "strategy.fedbabu.finetune_epochs=2"],
    "quickstart/fedavg+ggeur": ["strategy.addons=['ggeur']"],
    "quickstart/fedavg+ggeur(loop=code)": ["strategy.name='fedavg+ggeur'", "strategy.ggeur.loop='code'"],
    "quickstart/fedper+ggeur": ["strategy.name='fedper+ggeur'"],
    # FED-PUB with the L1 in the loss at lambda1 = 1e-3, the default then.
    "fedpub_cora_disjoint10/fedpub": [*PAPER_L1],
    "fedpub_cora_disjoint10/fedpub(regularizers=code_noop)": [*PAPER_L1, "strategy.fedpub.regularizers='code_noop'"],
    "fedpub_cora_disjoint10/fedpub(agg_norm=cosine,global_weighting=uniform)": [
        *PAPER_L1, "strategy.fedpub.agg_norm='cosine'", "strategy.fedpub.global_weighting='uniform'"],
    "fedpub_cora_disjoint10/fedavg[gcn]": ["strategy.name='fedavg'", "model.name='gcn'"],
    "fedpub_cora_disjoint10/fedprox[gcn]": ["strategy.name='fedprox'", "model.name='gcn'"],
    "fedpub_cora_disjoint10/fedper[gcn]": ["strategy.name='fedper'", "model.name='gcn'"],
    "fedpub_cora_disjoint10/local[gcn]": ["strategy.name='local'", "model.name='gcn'"],
    # The files' augmentation came later (RandomCrop(28, pad 2): translate_pixels = 2).
    # The recordings were made with the paper's SSE-C norm, the default then.
    "fedloge_fmnist_lt/fedloge": ["client.translate_pixels=0", "strategy.fedloge.etf_norm=0.1"],
    "fedloge_fmnist_lt/fedloge(norm_transfer=code,pm_mask=train_count_rule,sse_c_bias=random_frozen)": [
        "client.translate_pixels=0",
        "strategy.fedloge.norm_transfer='code'", "strategy.fedloge.pm_mask='train_count_rule'",
        "strategy.fedloge.sse_c_bias='random_frozen'", "strategy.fedloge.etf_norm=0.1"],
    "fedloge_fmnist_lt/fedavg": ["strategy.name='fedavg'", "client.translate_pixels=0"],
    "ggeur_officecaltech_lds/fedavg": [],
    "ggeur_officecaltech_lds/fedavg+ggeur": ["strategy.addons=['ggeur']"],
    "ggeur_officecaltech_lds/fedavg+ggeur(augment=isotropic)": [
        "strategy.addons=['ggeur']", "strategy.ggeur.augment='isotropic'"],
    "ggeur_officecaltech_lds/fedavg+ggeur(augment=resample)": [
        "strategy.addons=['ggeur']", "strategy.ggeur.augment='resample'"],
    "ggeur_officecaltech_lds/fedavg+ggeur(noise_scale=eigenvalue,eigen_scale=top10,upload=full)": [
        "strategy.addons=['ggeur']", "strategy.ggeur={noise_scale='eigenvalue', eigen_scale='top10', upload='full'}"],
    "ggeur_officecaltech_lds/fedavg+ggeur(loop=code,eigen_scale=code)": [
        "strategy.addons=['ggeur']", "strategy.ggeur={loop='code', eigen_scale='code'}"],
    "ggeur_officecaltech_lds/fedavg+ggeur(rule=single_domain,pool_clients=guide_set,upload=eigen,num_eigenpairs=32)": [
        "strategy.addons=['ggeur']",
        "strategy.ggeur={rule='single_domain', pool_clients='guide_set', upload='eigen', num_eigenpairs=32}"],
    "ggeur_officecaltech_lds/fedprox+ggeur": ["strategy.name='fedprox+ggeur'"],
    # The file's model and augmentation then (now cnn_bn, translate_pixels = 2).
    "fraug_mnist_usps/fedavg": ["model.name='cnn'", "client.translate_pixels=0"],
    "fedlabel_usps/fedavg": ["client.translate_pixels=0"],  # the file's weak view came later
}


def _same(old: float, new: float) -> bool:
    return old == new or (math.isnan(old) and math.isnan(new))



@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    """One MLflow store for every case (its schema is made once)."""
    return f"sqlite:///{tmp_path_factory.mktemp('behaviour') / 'mlflow.db'}"


@requires_shared_data
@pytest.mark.parametrize("case", list(CASES))
def test_recorded_metrics_are_unchanged(case, store):
    capability = torch.backends.cpu.get_cpu_capability()
    recording = recording_for(capability, kernel_fingerprint())
    if recording is None:
        pytest.skip(f"no recording for {capability} CPU kernels: make one with tests/record_regression.py")
    recorded = recording["cases"][case]
    overrides = [*CASES[case], f"rounds={CHECKED_ROUNDS}", f"seed={RECORDED_SEED}", f"mlflow.tracking_uri='{store}'"]
    summary, _ = run_in_process(load_scenario(REPO / "sims" / f"{recorded['file']}.toml", overrides))
    checked = {step: old for step, old in recorded["history"].items() if int(step) <= CHECKED_ROUNDS}
    assert len(checked) == CHECKED_ROUNDS + 1
    for step, old in checked.items():
        new = summary.history[int(step)]
        compared = set(old) - NOT_COMPARED
        added = {k for k in set(new) - set(old) - NOT_COMPARED if ADDED.match(k)}
        assert compared == set(new) - NOT_COMPARED - added, f"round {step}: metric names differ"
        changed = {k: (old[k], new[k]) for k in sorted(compared) if not _same(old[k], new[k])}
        assert not changed, f"round {step}: {changed}"


def test_every_case_is_checked_on_every_recording():
    assert RECORDING_FILES  # the AVX512 one, at least
    for recording in RECORDING_FILES:
        capability = recording["cpu_capability"]
        assert recording["rounds"] == RECORDED_ROUNDS and recording["seed"] == RECORDED_SEED
        # (FedBABU on FedLoGe's file: 28 s; FedBABU is checked on the quickstart)
        assert set(CASES) == set(recording["cases"]) - {"fedloge_fmnist_lt/fedbabu"}, capability
