"""Deployment as an operator runs it, with the scripts of ``deploy/`` and real Flower
processes on loopback: the secure default launch, a SuperNode killed mid-round and
restarted, the SuperLink killed mid-run and restarted, and stock Flower apps on either
side of flowerbed's (deploy/README.md, deploy/CLIENTS.md)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import tomli_w
from flower_procs import (BIN, HOST, Processes, Proc, flwr_cli, free_ports, list_runs, processes,  # noqa: F401
                          wait_for_port, wait_for_runs, write_run_config)
from mlflow.tracking import MlflowClient

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
STOCK_APP = Path(__file__).parent / "stock_flower_app"
CONNECTION = "ops"


class Federation:
    """A SuperLink and SuperNodes started by deploy/superlink.sh and deploy/supernode.sh."""

    def __init__(self, processes: Processes, tmp: Path, secure: bool) -> None:
        self.procs, self.tmp, self.secure = processes, tmp, secure
        self.http, self.fleet = free_ports(2)
        self.certs = tmp / "certs"
        self.link_dir = tmp / "link"
        self.link_dir.mkdir()
        self.cli_home = tmp / "cli"
        self.cli_home.mkdir()
        self.env = {**processes.env, "FLOWERBED_CERTS": str(self.certs), "FLOWERBED_HTTP_PORT": str(self.http),
                    "FLOWERBED_FLEET_ADDRESS": f"{HOST}:{self.fleet}"}
        self.cli_env = {**processes.env, "FLWR_HOME": str(self.cli_home)}
        connection = {"address": f"{HOST}:{self.http}"}
        if secure:
            subprocess.run(["bash", str(DEPLOY / "certs.sh"), "-o", str(self.certs), "-n", "3"], check=True,
                           capture_output=True)
            connection["root-certificates"] = str(self.certs / "ca.crt")
        else:
            connection["insecure"] = True
        (self.cli_home / "config.toml").write_text(tomli_w.dumps({"superlink": {"default": CONNECTION,
                                                                                CONNECTION: connection}}))
        self.restarts = 0

    def start_link(self) -> Proc:
        name = f"superlink{self.restarts or ''}"
        self.restarts += 1
        args = ["bash", str(DEPLOY / "superlink.sh"), *([] if self.secure else ["--insecure"])]
        self.link = self.procs.start(name, args, env={**self.env, "FLWR_HOME": str(self.tmp / "link-home")},
                                     cwd=self.link_dir)
        wait_for_port(self.http, self.link, self.procs)
        wait_for_port(self.fleet, self.link, self.procs)
        return self.link

    def start_node(self, partition: int, num: int, name: str | None = None, insecure: bool | None = None,
                   env: dict[str, str] | None = None) -> Proc:
        insecure = not self.secure if insecure is None else insecure
        args = ["bash", str(DEPLOY / "supernode.sh"), *(["--insecure"] if insecure else []),
                str(partition), str(num), f"{HOST}:{self.fleet}"]
        port = free_ports(1)[0]
        home = self.tmp / f"home-{name or partition}-{time.monotonic_ns()}"
        return self.procs.start(name or f"supernode{partition}", args, env={
            **self.env, "FLOWERBED_NODE_PORT": str(port), "FLWR_HOME": str(home), **(env or {})})

    def register(self, key: str) -> None:
        flwr_cli(["supernode", "register", str(self.certs / f"{key}.pub"), CONNECTION], self.cli_env, self.tmp)

    def submit(self, name: str, app: Path, run_config: Path | None = None) -> Proc:
        extra = ["--run-config", str(run_config)] if run_config else []
        return self.procs.start(name, [str(BIN / "flwr"), "run", str(app), CONNECTION, *extra, "--stream"],
                                env=self.cli_env, cwd=app)

    def superexec_pid(self) -> int:
        return int((self.link_dir / "superexec.pid").read_text())


def run_config(tmp: Path, name: str, tracking_uri: str, experiment: str, overrides: str = "", **keys) -> Path:
    values = {"mlflow.tracking_uri": tracking_uri, "mlflow.experiment": experiment, **keys}
    if overrides:
        values["overrides"] = overrides
    return write_run_config(tmp / f"{name}.toml", values)


def mlflow_run(tracking_uri: str, experiment: str):
    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return client, None
    runs = client.search_runs([exp.experiment_id])
    return client, (runs[0] if runs else None)


def metric(client: MlflowClient, run, key: str) -> dict[int, float]:
    return {m.step: m.value for m in client.get_metric_history(run.info.run_id, key)}


def wait_until(what: str, check, timeout: float, procs: Processes, alive: list[str]):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        procs.check_alive(alive)
        if result := check():
            return result
        time.sleep(0.5)
    pytest.fail(f"{what}: not within {timeout:.0f}s")


def kill_group(proc: Proc) -> None:
    os.killpg(proc.popen.pid, signal.SIGKILL)
    proc.popen.wait(timeout=10)


def test_the_default_launch_is_tls_with_registered_supernodes_only(processes: Processes, tmp_path: Path) -> None:
    fed = Federation(processes, tmp_path, secure=True)
    fed.start_link()
    fed.register("supernode-0")
    fed.register("supernode-2")

    # A SuperNode whose key nobody registered is refused, and says so, within seconds.
    started = time.monotonic()
    stranger = fed.start_node(1, 2, name="unregistered")
    assert stranger.popen.wait(timeout=60) != 0
    assert "Failed to activate SuperNode" in stranger.log.read_text() and time.monotonic() - started < 60
    # A plaintext SuperNode never reaches Flower's endless retries: the probe stops it.
    started = time.monotonic()
    plain = fed.start_node(1, 2, name="plaintext", insecure=True)
    assert plain.popen.wait(timeout=30) == 2 and time.monotonic() - started < 30
    assert "speaks TLS, this SuperNode plaintext" in plain.log.read_text()

    # Registered nodes run: partition 0 plainly, partition 1 trusting only apps a
    # publisher signed (Flower Hub's signatures), which `flwr run .` is not.
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "publisher")], check=True)
    trusted = tmp_path / "trusted.yaml"
    trusted.write_text(f"fpk_00000000-0000-0000-0000-000000000000: '{(tmp_path / 'publisher.pub').read_text().strip()}'\n")
    fed.start_node(0, 2)
    fed.start_node(1, 2, name="signed-only", env={"TRUSTED_ENTITIES": str(trusted),
                                                   "AUTH_KEY": str(fed.certs / "supernode-2")})
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    experiment = f"secure-{uuid.uuid4().hex[:8]}"
    config = run_config(tmp_path, "secure", tracking_uri, experiment, rounds=1, **{
        "partition.num_clients": 2, "sampling.min_clients": 1}, overrides="sampling.min_success_fraction=0.5")
    cli = fed.submit("flwr-run", REPO, config)
    runs = wait_for_runs(cli, processes, ["superlink", "supernode0", "signed-only"], CONNECTION, fed.cli_env,
                         tmp_path, 300)
    assert runs[0]["status"] == "finished:completed", runs
    client, run = mlflow_run(tracking_uri, experiment)
    assert run.info.status == "FINISHED"
    assert (metric(client, run, "clients_ok")[1], metric(client, run, "clients_failed")[1]) == (1, 1)
    assert "could not be verified" in (processes.log_dir / "signed-only.log").read_text()
    assert f"finished: MLflow run {run.info.run_id}" in cli.log.read_text()


def test_a_killed_supernode_and_a_killed_superlink_do_not_end_the_run(processes: Processes, tmp_path: Path) -> None:
    fed = Federation(processes, tmp_path, secure=False)
    fed.start_link()
    nodes = [fed.start_node(p, 3) for p in range(3)]
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    timeout_s = 15

    # 1. kill -9 one of three SuperNodes mid-run: its round waits at most the round's
    # timeout, the node is counted failed, and once restarted it is counted again
    # under its partition (a new node id; the old one is dropped when the SuperLink
    # gives up on it, within a minute).
    experiment = f"node-loss-{uuid.uuid4().hex[:8]}"
    config = run_config(tmp_path, "node-loss", tracking_uri, experiment, rounds=8, **{
        "partition.num_clients": 3, "sampling.min_clients": 2},
        overrides=f"sampling.round_timeout_s={timeout_s}; sampling.min_available_clients=2; "
                  "sampling.node_wait_s=120; sampling.max_skipped_rounds=8")
    cli = fed.submit("flwr-run", REPO, config)
    alive = ["superlink", "supernode0", "supernode1"]

    def logged_round(r: int):
        client, run = mlflow_run(tracking_uri, experiment)
        return run is not None and r in metric(client, run, "clients_ok")

    wait_until("round 1", lambda: logged_round(1), 180, processes, alive)
    kill_group(nodes[2])
    wait_until("a round without node 2", lambda: logged_round(2), 120, processes, alive)
    fed.start_node(2, 3, name="supernode2-restarted")
    runs = wait_for_runs(cli, processes, alive, CONNECTION, fed.cli_env, tmp_path, 400)
    assert runs[0]["status"] == "finished:completed", runs
    client, run = mlflow_run(tracking_uri, experiment)
    assert run.info.status == "FINISHED"
    failed, ok = metric(client, run, "clients_failed"), metric(client, run, "clients_ok")
    assert sum(failed.values()) >= 1 and ok[8] == 3, (ok, failed)
    assert max(metric(client, run, "round_seconds").values()) < 2 * timeout_s + 10  # no endless wait

    # 2. kill -9 the SuperLink mid-run and start it again with the same script: the
    # SuperNodes (state database: same node ids) reconnect, and the ServerApp (its
    # SuperExec is not the SuperLink's child) is still there. Flower 1.39 then loses the
    # reply objects that were in flight at the crash, and the run ends FAILED in MLflow
    # with the rounds before the crash kept (or, if nothing was in flight, FINISHED);
    # never RUNNING forever. The same SuperNodes then serve the next run.
    experiment = f"link-loss-{uuid.uuid4().hex[:8]}"
    config = run_config(tmp_path, "link-loss", tracking_uri, experiment, rounds=6, **{
        "partition.num_clients": 3, "sampling.min_clients": 2}, overrides="sampling.round_timeout_s=120")
    cli = fed.submit("flwr-run-2", REPO, config)
    nodes_now = ["supernode0", "supernode1", "supernode2-restarted"]
    wait_until("round 2", lambda: logged_round(2), 180, processes, ["superlink", *nodes_now])
    superexec = fed.superexec_pid()
    kill_group(fed.link)
    time.sleep(3)
    fed.start_link()
    assert fed.superexec_pid() == superexec  # kept, with the ServerApp it started

    def ended():
        client, run = mlflow_run(tracking_uri, experiment)
        return run if run.info.status != "RUNNING" else None

    run = wait_until("the interrupted run's end", ended, 300, processes, ["superlink1", *nodes_now])
    client = MlflowClient(tracking_uri=tracking_uri)
    rounds = sorted(metric(client, run, "clients_ok"))
    assert (run.info.status, rounds) == ("FINISHED", list(range(1, 7))) or (
        run.info.status == "FAILED" and rounds[:2] == [1, 2]), (run.info.status, rounds)

    experiment = f"after-link-loss-{uuid.uuid4().hex[:8]}"
    config = run_config(tmp_path, "after", tracking_uri, experiment, rounds=1, **{
        "partition.num_clients": 3, "sampling.min_clients": 3})
    fed.submit("flwr-run-3", REPO, config)
    wait_until("a run over the reconnected SuperNodes", lambda: logged_round(1), 240, processes,
               ["superlink1", *nodes_now])
    client, run = mlflow_run(tracking_uri, experiment)
    assert metric(client, run, "clients_ok")[1] == 3
    os.kill(superexec, signal.SIGTERM)


def _mixed_app(tmp: Path, name: str, serverapp: str, clientapp: str, config: dict) -> Path:
    """Flower's quickstart (tests/stock_flower_app) with one side swapped for flowerbed's."""
    import tomllib

    app = tmp / name
    shutil.copytree(STOCK_APP / "stockapp", app / "stockapp")
    project = tomllib.loads((STOCK_APP / "pyproject.toml").read_text())
    project["tool"]["flwr"]["app"].update({"components": {"serverapp": serverapp, "clientapp": clientapp},
                                           "config": config})
    (app / "pyproject.toml").write_text(tomli_w.dumps(project))
    return app


def test_stock_flower_apps_run_with_flowerbeds(processes: Processes, tmp_path: Path) -> None:
    import tomllib

    fed = Federation(processes, tmp_path, secure=False)
    fed.start_link()
    fed.start_node(0, 2)
    fed.start_node(1, 2)
    servers = ["superlink", "supernode0", "supernode1"]
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    experiment = f"stock-client-{uuid.uuid4().hex[:8]}"

    # Flower's quickstart ClientApp, unchanged, in a flowerbed FedAvg run: the app's run
    # config is flowerbed's plus the two keys the stock client reads.
    ours = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]
    config = {**ours, "rounds": 2, "partition.num_clients": 2, "mlflow.tracking_uri": tracking_uri,
              "mlflow.experiment": experiment, "batch-size": 32, "local-epochs": 1}
    app = _mixed_app(tmp_path, "stock-client", "flowerbed.server.app:app", "stockapp.client_app:app", config)
    cli = fed.submit("flwr-run", app)
    runs = wait_for_runs(cli, processes, servers, CONNECTION, fed.cli_env, tmp_path, 300)
    assert runs[0]["status"] == "finished:completed", runs
    client, run = mlflow_run(tracking_uri, experiment)
    assert run.info.status == "FINISHED"
    assert metric(client, run, "clients_ok") == {1: 2, 2: 2}
    assert set(metric(client, run, "personalized_accuracy")) == {1, 2}  # its eval_acc, read as accuracy

    # flowerbed's ClientApp under Flower's quickstart ServerApp (its FedAvg, its run config).
    stock = tomllib.loads((STOCK_APP / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]
    app = _mixed_app(tmp_path, "stock-server", "stockapp.server_app:app", "flowerbed.client.app:app", stock)
    cli = fed.submit("flwr-run-stock", app)
    runs = wait_for_runs(cli, processes, servers, CONNECTION, fed.cli_env, tmp_path, 300, expected=2)
    assert all(r["status"] == "finished:completed" for r in runs), runs
    log = cli.log.read_text()
    assert "Saving final model to disk" in log and "ERROR" not in log, log[-3000:]
    assert (fed.link_dir / "final_model.pt").is_file()
