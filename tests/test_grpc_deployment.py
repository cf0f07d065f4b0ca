"""The quickstart app under Flower's Deployment Engine: a real SuperLink, two SuperNodes
reaching it over gRPC (the Fleet API's grpc-rere transport) on loopback, and ``flwr run``.

Every process is a separate OS process started from this virtualenv, as on real
machines (see ``deploy/README.md``); only the addresses are loopback, with free
ports, and TLS is off (``--insecure``). Flower 1.39 listens on:

* SuperLink ``--port``: one HTTP server for the Control API (``flwr`` CLI) and the
  Runtime API (its SuperExec and the ServerApp process);
* SuperLink ``--fleet-api-address``: the Fleet API (gRPC) that SuperNodes connect to;
* SuperNode ``--port``: its Runtime API (HTTP) for its SuperExec and ClientApp process.

The run is checked where the ServerApp logged it: the MLflow store.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from flower_procs import (
    BIN,
    HOST,
    Processes,
    assert_mlflow_run,
    assert_one_completed,
    free_ports,
    processes,  # noqa: F401  (pytest fixture)
    wait_for_port,
    wait_for_runs,
    write_connection,
    write_run_config,
)

REPO = Path(__file__).resolve().parents[1]
CONNECTION = "flowerbed-test"

RUN_TIMEOUT_S = 300.0  # the whole federated run, from `flwr run` to "finished"
NUM_NODES = 2
ROUNDS = 2
# The strategies that need no second round to show their state at work run one: every
# message costs each SuperNode a fresh ClientApp process (see deploy/README.md).
ONE_ROUND = 1

# FED-PUB on the same two SuperNodes: its per-node messages, client-kept masks and
# Adam state and functional embeddings, over gRPC. A whole scenario travels in the
# run config's `scenario` key (only keys declared in pyproject.toml may be set).
FEDPUB_SCENARIO = f"""
seed = 0
rounds = {ROUNDS}
[dataset]
name = "sbm_shift"
[partition]
kind = "subgraph_disjoint"
num_clients = {NUM_NODES}
[model]
name = "masked_gcn"
hidden = 16
[strategy]
name = "fedpub"
[strategy.fedpub]
tau = 5.0
[client]
local_epochs = 1
lr = 0.01
optimizer = "adam"
[sampling]
min_clients = {NUM_NODES}
"""


# FedLoGe and GGEUR (multi-domain: two Office-Caltech domains, one per SuperNode).
FEDLOGE_SCENARIO = f"""
seed = 0
rounds = {ONE_ROUND}
[dataset]
name = "digits"
[partition]
kind = "longtail_dirichlet"
num_clients = {NUM_NODES}
imbalance_factor = 10
alpha = 1.0
[model]
name = "mlp2"
hidden = 16
[strategy]
name = "fedloge"
[strategy.fedloge]
etf_steps = 200
[client]
local_epochs = 1
batch_size = 8
lr = 0.03
momentum = 0.5
[sampling]
min_clients = {NUM_NODES}
"""
GGEUR_SCENARIO = f"""
seed = 0
rounds = {ONE_ROUND}
[dataset]
name = "office_caltech10"
[partition]
kind = "domain_dirichlet"
domains = "webcam,dslr"
alpha = 0.5
[model]
name = "logreg"
[strategy]
name = "fedprox+ggeur"
[client]
local_epochs = 1
batch_size = 16
lr = 0.001
optimizer = "adam"
[sampling]
min_clients = {NUM_NODES}
"""

# FRAug on MNIST + USPS (one domain per SuperNode): G travels with the classifier, each
# SuperNode keeps its RTNet, prototypes and BatchNorm in its Context.state.
FRAUG_SCENARIO = f"""
seed = 0
rounds = {ONE_ROUND}
[dataset]
name = "mnist_usps"
test_fraction = 0.2
[partition]
kind = "domain"
samples_per_client = 32
val_fraction = 0.05
[model]
name = "cnn_bn"
[strategy]
name = "fraug"
[client]
local_epochs = 1
batch_size = 16
lr = 0.01
momentum = 0.5
[sampling]
min_clients = {NUM_NODES}
"""

# FedLabel on USPS with 10% labels: the global teacher arrives with the message, the
# local one is fitted on the SuperNode; pseudo-label counts come back in the metrics.
FEDLABEL_SCENARIO = f"""
seed = 0
rounds = {ONE_ROUND}
[dataset]
name = "usps"
[partition]
kind = "dirichlet"
num_clients = {NUM_NODES}
alpha = 0.5
labeled_fraction = 0.1
[model]
name = "cnn"
hidden = 32
[strategy]
name = "fedlabel"
[strategy.fedlabel]
beta = 0.3
unlabeled_steps = 2
[client]
local_epochs = 1
batch_size = 16
lr = 0.05
momentum = 0.9
translate_pixels = 2
[sampling]
min_clients = {NUM_NODES}
"""


# --- the test -----------------------------------------------------------------------


def test_quickstart_over_grpc(processes: Processes, tmp_path: Path) -> None:
    experiment = f"grpc-deployment-{uuid.uuid4().hex[:12]}"
    tracking_uri = f"sqlite:///{(tmp_path / 'mlflow.db').resolve()}"
    overrides_file = write_run_config(tmp_path / "run-config.toml", {
        "rounds": ROUNDS,
        "partition.num_clients": NUM_NODES,
        "sampling.min_clients": NUM_NODES,
        "mlflow.tracking_uri": tracking_uri,
        "mlflow.experiment": experiment,
    })

    link_http, fleet, *node_http = free_ports(2 + NUM_NODES)
    homes = tmp_path / "flwr-home"

    def env_with_home(name: str) -> dict[str, str]:
        (homes / name).mkdir(parents=True, exist_ok=True)
        return {**processes.env, "FLWR_HOME": str(homes / name)}

    # SuperLink: Control + Runtime HTTP API on --host/--port, Fleet API (gRPC) apart.
    superlink = processes.start("superlink", [
        str(BIN / "flower-superlink"), "--insecure",
        "--host", HOST, "--port", str(link_http),
        "--fleet-api-type", "grpc-rere", "--fleet-api-address", f"{HOST}:{fleet}",
        "--disable-runtime-dependency-installation",
    ], env=env_with_home("superlink"))
    wait_for_port(link_http, superlink, processes)
    wait_for_port(fleet, superlink, processes)

    # SuperNodes: one partition each, over gRPC (grpc-rere) to the Fleet API.
    nodes = []
    for partition_id, port in enumerate(node_http):
        name = f"supernode{partition_id}"
        nodes.append(processes.start(name, [
            str(BIN / "flower-supernode"), "--insecure", "--grpc-rere",
            "--superlink", f"{HOST}:{fleet}",
            "--host", HOST, "--port", str(port),
            "--node-config", f"partition-id={partition_id} num-partitions={NUM_NODES}",
        ], env=env_with_home(name)))
    for node, port in zip(nodes, node_http):
        wait_for_port(port, node, processes)

    # The CLI reads its SuperLink connections from $FLWR_HOME/config.toml.
    cli_env = env_with_home("cli")
    write_connection(homes / "cli", CONNECTION, link_http)

    # `flwr run` builds the FAB from the repository and submits it; --stream follows
    # the ServerApp's log and returns once the run has finished.
    run_cli = processes.start("flwr-run", [
        str(BIN / "flwr"), "run", str(REPO), CONNECTION,
        "--run-config", str(overrides_file), "--stream",
    ], env=cli_env, cwd=REPO)
    servers = ["superlink", *(node.name for node in nodes)]
    runs = wait_for_runs(run_cli, processes, servers, CONNECTION, cli_env, tmp_path, RUN_TIMEOUT_S)
    assert_one_completed(runs)

    # What the ServerApp logged, on "the SuperLink host".
    assert_mlflow_run(tracking_uri, experiment, num_clients=NUM_NODES, rounds=ROUNDS)

    # More runs on the same federation, unchanged code: FED-PUB, FedLoGe, FedProx+GGEUR,
    # FRAug, FedLabel, submitted together (the SuperLink runs them side by side, and the
    # SuperNodes serve their messages as they come: most of a run is waiting).
    scenarios = {"fedpub": FEDPUB_SCENARIO, "fedloge": FEDLOGE_SCENARIO, "ggeur": GGEUR_SCENARIO,
                 "fraug": FRAUG_SCENARIO, "fedlabel": FEDLABEL_SCENARIO}
    clis = []
    for label, scenario in scenarios.items():
        config = write_run_config(tmp_path / f"run-config-{label}.toml", {
            "scenario": scenario,
            "overrides": f"mlflow.tracking_uri='{tracking_uri}'; mlflow.experiment='{experiment}-{label}'",
        })
        clis.append(processes.start(f"flwr-run-{label}", [
            str(BIN / "flwr"), "run", str(REPO), CONNECTION, "--run-config", str(config), "--stream",
        ], env=cli_env, cwd=REPO))
    runs = wait_for_runs(clis, processes, servers, CONNECTION, cli_env, tmp_path, RUN_TIMEOUT_S * 2,
                         expected=1 + len(scenarios))
    assert len(runs) == 1 + len(scenarios) and all(r["status"] == "finished:completed" for r in runs), runs

    def logged(label: str, rounds: int = ROUNDS):
        return assert_mlflow_run(tracking_uri, f"{experiment}-{label}", num_clients=NUM_NODES, rounds=rounds)

    run = logged("fedpub")
    assert run.data.tags["strategy"] == "fedpub" and run.data.tags["method"] == "fedpub(tau=5.0)"
    assert "fedpub_alpha_self" in run.data.metrics and "personalized_accuracy_trained" in run.data.metrics

    run = logged("fedloge", rounds=ONE_ROUND)
    assert run.data.tags["strategy"] == "fedloge"
    assert {"global_accuracy_glafr", "personalized_accuracy_glafr"} <= set(run.data.metrics)

    # GGEUR's setup phase (statistics up, geometry and prototypes down, augmentation
    # kept in each SuperNode's Context.state) before FedProx's rounds.
    run = logged("ggeur", rounds=ONE_ROUND)
    assert run.data.params["strategy.ggeur.augment"] == "geometry" and run.data.tags["method"] == "fedprox+ggeur"
    assert run.data.metrics["ggeur_multi_domain"] == 1.0 and run.data.metrics["ggeur_bytes_up"] > 0
    assert run.data.metrics["ggeur_augmented_examples"] >= NUM_NODES * 10 * 50
    assert "global_accuracy_domain_mean" in run.data.metrics

    run = logged("fraug", rounds=ONE_ROUND)
    assert run.data.tags["strategy"] == "fraug" and run.data.params["strategy.fraug.use_rtnet"] == "True"
    assert {"personalized_fraug_generated_accuracy", "personalized_accuracy_mnist",
            "personalized_accuracy_usps", "personalized_val_accuracy"} <= set(run.data.metrics)

    run = logged("fedlabel", rounds=ONE_ROUND)
    assert run.data.tags["strategy"] == "fedlabel"
    assert 0.0 < run.data.metrics["pseudo_label_rate"] <= 1.0 and "local_win_rate" in run.data.metrics
