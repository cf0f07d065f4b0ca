"""flowerbed's simulation engine (the ServerApp over a grid of Ray actors) computes what
Flower's Simulation Engine computes: the same per-round metrics, bit for bit, for the
quickstart and one scenario per paper strategy (against the in-process grid, whose
metrics ``test_behaviour_unchanged`` ties to the recordings made before the engine
existed); and it survives what a pool of processes meets (a client that raises, an
actor that dies, a client slower than the round's timeout)."""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import pytest
from conftest import requires_shared_data
from inprocess import run_in_process

from flowerbed.server.simulate import shutdown_ray, simulate, start_ray
from flowerbed.sims.config import load_scenario

REPO = Path(__file__).resolve().parents[1]
NOT_COMPARED = {"round_seconds", "ggeur_setup_seconds"}

# One scenario per paper strategy, and the quickstart: (file, overrides).
CASES = {
    "quickstart/fedavg": ("quickstart", ["partition.num_clients=6"]),
    "fedpub": ("fedpub_cora_disjoint5", []),
    "fedloge": ("fedloge_fmnist_lt", ["partition.num_clients=6", "client.local_epochs=1"]),
    "ggeur": ("ggeur_officecaltech_lds", []),
    "fraug": ("fraug_mnist_usps", ["client.local_epochs=1"]),
    "fedlabel": ("fedlabel_usps", ["partition.num_clients=4", "client.local_epochs=1"]),
}


@pytest.fixture(scope="module", autouse=True)
def _ray_stopped_after_the_module():
    yield
    shutdown_ray()


@pytest.fixture
def ray_session():
    """One local Ray for the module's runs (each starts its actors, not Ray), started
    again if a run stopped it (Flower's engine stops the Ray it finds)."""
    import ray

    if not ray.is_initialized():
        assert start_ray(None, verbose=False) == "started"


def _same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def _differences(old: dict[int, dict[str, float]], new: dict[int, dict[str, float]]) -> dict:
    assert set(old) == set(new), "different rounds"
    out = {}
    for step in old:
        keys = set(old[step]) | set(new[step])
        out.update({(step, k): (old[step].get(k), new[step].get(k)) for k in sorted(keys - NOT_COMPARED)
                    if k not in old[step] or k not in new[step] or not _same(old[step][k], new[step][k])})
    return out


@requires_shared_data
@pytest.mark.parametrize("case", list(CASES))
def test_the_actor_engine_gives_the_metrics_of_the_in_process_grid(case, ray_session, tmp_path):
    file, overrides = CASES[case]
    scenario = load_scenario(REPO / "sims" / f"{file}.toml",
                             [*overrides, "rounds=2", f"mlflow.tracking_uri='sqlite:///{tmp_path}/mlflow.db'"])
    expected, _ = run_in_process(scenario)
    got = simulate(scenario, progress=None)
    assert not _differences(expected.history, got.history)
    assert got.client_metrics[2]["train"].keys() == expected.client_metrics[2]["train"].keys()


def test_the_actor_engine_gives_flowers_engine_metrics(tmp_path):
    """Both engines through simulate() (each starts and stops its own Ray)."""
    base = ["partition.num_clients=4", "rounds=2", "sampling.fraction_train=0.5",
            f"mlflow.tracking_uri='sqlite:///{tmp_path}/mlflow.db'"]
    actors = simulate(load_scenario(REPO / "sims" / "quickstart.toml", base), progress=None)
    flower = simulate(load_scenario(REPO / "sims" / "quickstart.toml", [*base, "simulation.engine='flower'"]),
                      progress=None)
    assert not _differences(flower.history, actors.history)
    assert actors.client_metrics[1]["train"].keys() == flower.client_metrics[1]["train"].keys()  # the same sample


def test_a_client_that_raises_dies_or_hangs_fails_alone_and_the_pool_recovers(ray_session):
    from flwr.app import ConfigRecord, Message, MessageType, RecordDict
    from flwr.supercore.task_identity import TaskIdentity

    from engine_apps import build_faulty_app
    from flowerbed.server.engine import NODE_ID_BASE, ActorGrid, ActorPool
    from flowerbed.server.grid import RosterGrid

    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 7, 1
    pool = ActorPool(2, {"num_cpus": 1, "num_gpus": 0}, build_faulty_app, ())
    grid = RosterGrid(ActorGrid(pool, 5, run_id=7))
    try:
        def round_of(fault: bool, timeout: float):
            nodes = list(grid.get_node_ids())
            assert nodes == [NODE_ID_BASE + i for i in range(5)]  # in partition order, no query round
            messages = [Message(RecordDict({"config": ConfigRecord({"fault": fault})}), dst_node_id=node,
                                message_type=MessageType.TRAIN) for node in nodes]
            replies = list(grid.send_and_receive(messages, timeout=timeout))
            return replies, grid.take_traffic()

        replies, traffic = round_of(fault=True, timeout=15)
        # 0 and 4 answer; 1 raised, 2's process died (both error replies); 3 timed out (no reply).
        assert traffic.ok == {"train": 2} and traffic.failed == {"train": 3}
        assert sorted(traffic.metrics["train"]) == [0, 4]
        errors = {r.metadata.src_node_id - NODE_ID_BASE: r.error.reason for r in replies if r.has_error()}
        assert sorted(errors) == [1, 2] and "ValueError: boom on partition 1" in errors[1]
        assert "died" in errors[2]

        replies, traffic = round_of(fault=False, timeout=60)  # the replaced actors serve everyone
        assert traffic.ok == {"train": 5} and not traffic.failed
        calls = {p: m["calls"] for p, m in traffic.metrics["train"].items()}
        # A node's Context state comes back from its actor and goes out with its next
        # message; a call that failed changed none (as in Flower's engine).
        assert calls == {0: 2, 1: 1, 2: 1, 3: 1, 4: 2}
        assert len({m["pid"] for m in traffic.metrics["train"].values()}) == 2  # 2 live actors
    finally:
        pool.shutdown()


def _ray_cli(*args: str) -> list[str]:
    """Ray's command line, from this environment's bin folder."""
    import sys

    return [str(Path(sys.executable).parent / "ray"), *args]


def test_a_run_attaches_to_a_running_ray_cluster_of_two_nodes_and_leaves_it_running(tmp_path):
    """``ray start --head`` plus a second node on this machine (1 CPU each): the run
    attaches (--ray-address), its two actors spread over both nodes, and the cluster is
    still there after it. Each `ray start --block` is stopped by its process group."""
    import signal
    import socket
    import shutil
    import subprocess
    import sys
    import tempfile
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"127.0.0.1:{port}"
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    common = ["--num-cpus", "1", "--block", "--disable-usage-stats"]
    # Its own temp folder: `ray start` records its address there, and a bare ray.init()
    # elsewhere on this machine would try to join it (Ray's default folder is shared).
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths live under it
    head = subprocess.Popen(_ray_cli("start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port),
                                     "--temp-dir", temp, "--include-dashboard", "false", *common),
                            env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    nodes = [head]
    try:
        time.sleep(6)
        nodes.append(subprocess.Popen(_ray_cli("start", "--address", address, "--node-ip-address", "127.0.0.1",
                                               *common), env=env, start_new_session=True,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        status = ""
        for _ in range(60):  # until the second node has joined
            status = subprocess.run(_ray_cli("status", "--address", address), env=env, capture_output=True,
                                    text=True).stdout
            if "2.0 CPU" in status:
                break
            time.sleep(1)
        assert "2.0 CPU" in status, status
        run = subprocess.run([sys.executable, "-m", "flowerbed.server.cli", "run", str(REPO / "sims" / "quickstart.toml"),
                              "--ray-address", address, "--set", "rounds=2", "--set", "partition.num_clients=4",
                              "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db"],
                             cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stdout + run.stderr
        assert re.search(rf"flowerbed: Ray attached at [\d.]+:{port}: 2 node\(s\), 2 CPUs", run.stdout), run.stdout
        assert "2 client actor(s) ready" in run.stdout and "round   2/2 | clients 4 ok 0 failed" in run.stdout
        # The cluster outlives the run, with nothing of it left holding CPUs (once Ray
        # has reaped the run's actors: seconds on a loaded machine).
        for _ in range(30):
            after = subprocess.run(_ray_cli("status", "--address", address), env=env, capture_output=True, text=True)
            assert after.returncode == 0, after.stderr
            if "0.0/2.0 CPU" in after.stdout:
                break
            time.sleep(1)
        assert "0.0/2.0 CPU" in after.stdout, after.stdout
    finally:
        for proc in reversed(nodes):
            os.killpg(proc.pid, signal.SIGTERM)
        for proc in nodes:
            proc.wait(timeout=60)
        shutil.rmtree(temp, ignore_errors=True)


def test_the_pool_is_what_the_ray_nodes_hold_and_a_client_none_can_host_is_refused():
    from flowerbed.server.resources import pool_size
    from flowerbed.sims.config import ConfigError

    def scenario(cpus: float, gpus: float, clients: int = 100):
        return load_scenario(REPO / "sims" / "quickstart.toml", [
            f"client.num_cpus={cpus}", f"client.num_gpus={gpus}", f"partition.num_clients={clients}"])

    gpu_nodes = [{"Alive": True, "Resources": {"CPU": 16.0, "GPU": 1.0}}, {"Alive": True, "Resources": {"CPU": 8.0}},
                 {"Alive": False, "Resources": {"CPU": 64.0, "GPU": 8.0}}]
    assert pool_size(scenario(1.0, 0.25), gpu_nodes) == 4  # four to the one live GPU, none on the CPU node
    assert pool_size(scenario(1.0, 0.0), gpu_nodes) == 24  # one a CPU, on both live nodes
    assert pool_size(scenario(1.0, 0.0, clients=5), gpu_nodes) == 5  # never more actors than clients
    with pytest.raises(ConfigError, match=r"^client\.num_gpus: no Ray node can host one client"):
        pool_size(scenario(1.0, 2.0), gpu_nodes)
    with pytest.raises(ConfigError, match=r"^client\.num_cpus: no Ray node can host one client"):
        pool_size(scenario(32.0, 0.0), gpu_nodes)
