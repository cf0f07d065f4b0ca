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

import json
import os
import signal
import socket
import subprocess
import sys
import time
import tomllib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import tomli_w
from mlflow.tracking import MlflowClient

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the virtualenv's bin/: flwr, flower-superlink, ...
HOST = "127.0.0.1"
CONNECTION = "flowerbed-test"

START_TIMEOUT_S = 90.0  # a SuperLink to listen, on a loaded 2-core machine
RUN_TIMEOUT_S = 300.0  # the whole federated run, from `flwr run` to "finished"
STATUS_POLL_S = 30.0
NUM_NODES = 2
ROUNDS = 2


# --- processes ----------------------------------------------------------------------


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log: Path

    def tail(self, lines: int = 60) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError as err:
            return f"<no log: {err}>"
        return "\n".join(text.splitlines()[-lines:])


def _children_of() -> dict[int, list[int]]:
    """ppid -> child pids, from /proc (Linux)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    return children


def _descendants(pid: int) -> list[int]:
    tree = _children_of() if Path("/proc").is_dir() else {}
    found, todo = [], [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _signal(pid: int, sig: int, group: bool = False) -> None:
    try:
        os.killpg(pid, sig) if group else os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours has exited; only the reaping is missing.
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class Processes:
    """Starts processes in their own session, logs each to a file, stops them all."""

    def __init__(self, log_dir: Path, env: dict[str, str]) -> None:
        self.log_dir = log_dir
        self.env = env
        self.procs: list[Proc] = []

    def start(self, name: str, args: list[str], env: dict[str, str] | None = None,
              cwd: Path | None = None) -> Proc:
        log = self.log_dir / f"{name}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(
                args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=env or self.env, cwd=cwd or self.log_dir, start_new_session=True,
            )
        proc = Proc(name, popen, log)
        self.procs.append(proc)
        return proc

    def stop_all(self, grace_s: float = 10.0) -> None:
        # The SuperLink starts its SuperExec in a session of its own (and the SuperExec
        # the app processes): find every descendant before anything dies and reparents.
        pids: list[int] = []
        for proc in reversed(self.procs):
            if proc.popen.poll() is None:
                pids += _descendants(proc.popen.pid)
        for proc in reversed(self.procs):
            if proc.popen.poll() is None:
                _signal(proc.popen.pid, signal.SIGTERM, group=True)
        for pid in pids:
            _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for proc in self.procs:
            try:
                proc.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.2)
        for proc in self.procs:
            _signal(proc.popen.pid, signal.SIGKILL, group=True)
            try:
                proc.popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        for pid in pids:
            if _alive(pid):
                _signal(pid, signal.SIGKILL)

    def report(self) -> str:
        parts = []
        for proc in self.procs:
            code = proc.popen.poll()
            state = "running" if code is None else f"exit code {code}"
            parts.append(f"===== {proc.name} ({state}), last lines of {proc.log} =====\n{proc.tail()}")
        return "\n".join(parts)

    def check_alive(self, names: list[str]) -> None:
        for proc in self.procs:
            if proc.name in names and proc.popen.poll() is not None:
                pytest.fail(f"{proc.name} exited with code {proc.popen.returncode}:\n{proc.tail()}")


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    env = dict(os.environ)
    for key in [k for k in env if k.startswith("FLWR_")]:
        env.pop(key)  # no FLWR_HOME, ports or internal switches from outside
    env.update({
        "FLWR_TELEMETRY_ENABLED": "0",
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        # The SuperLink would otherwise `uv sync` the app's dependencies into a fresh
        # environment per run; flowerbed and its dependencies are installed here.
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        # SuperLink and SuperNode start `flower-superexec`, `flwr-serverapp` and
        # `flwr-clientapp` by name.
        "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        "PYTHONUNBUFFERED": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "COLUMNS": "200",
    })
    env.pop("VIRTUAL_ENV", None)
    logs = tmp_path / "logs"
    logs.mkdir()
    procs = Processes(logs, env)
    try:
        yield procs
    finally:
        procs.stop_all()
        # Shown by pytest only when the test fails.
        print(procs.report())


# --- helpers ------------------------------------------------------------------------


def free_ports(count: int) -> list[int]:
    """``count`` distinct free TCP ports on loopback (bound to port 0, then released)."""
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((HOST, 0))
            socks.append(sock)
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def wait_for_port(port: int, proc: Proc, procs: Processes, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        procs.check_alive([proc.name])
        try:
            with socket.create_connection((HOST, port), timeout=1.0):
                return
        except OSError:
            time.sleep(0.3)
    pytest.fail(f"{proc.name} did not listen on {HOST}:{port} within {timeout:.0f}s:\n{proc.tail()}")


def app_config_keys() -> set[str]:
    with (REPO / "pyproject.toml").open("rb") as f:
        return set(tomllib.load(f)["tool"]["flwr"]["app"]["config"])


def flwr_cli(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 60.0) -> str:
    out = subprocess.run([str(BIN / "flwr"), *args], capture_output=True, text=True,
                         env=env, cwd=cwd, timeout=timeout, stdin=subprocess.DEVNULL)
    if out.returncode != 0:
        raise RuntimeError(f"flwr {' '.join(args)} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    return out.stdout


def list_runs(env: dict[str, str], cwd: Path) -> list[dict]:
    text = flwr_cli(["ls", CONNECTION, "--format", "json"], env, cwd)
    return json.loads(text[text.index("{"):])["runs"]


# --- the test -----------------------------------------------------------------------


def test_quickstart_over_grpc(processes: Processes, tmp_path: Path) -> None:
    experiment = f"grpc-deployment-{uuid.uuid4().hex[:12]}"
    tracking_uri = f"sqlite:///{(tmp_path / 'mlflow.db').resolve()}"
    overrides = {
        "rounds": ROUNDS,
        "partition.num_clients": NUM_NODES,
        "sampling.min_clients": NUM_NODES,
        "mlflow.tracking_uri": tracking_uri,
        "mlflow.experiment": experiment,
    }
    # The SuperLink rejects an override whose key the app's run config lacks.
    missing = sorted(set(overrides) - app_config_keys())
    assert not missing, (
        f"pyproject.toml [tool.flwr.app.config] lacks {missing}: `flwr run --run-config` "
        "can only override keys declared there"
    )
    # One TOML file: `--run-config` pairs are merged shallowly per table, and the
    # file keeps quoting of the sqlite path simple.
    overrides_file = tmp_path / "run-config.toml"
    overrides_file.write_text(tomli_w.dumps(overrides))

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
    wait_for_port(link_http, superlink, processes, START_TIMEOUT_S)
    wait_for_port(fleet, superlink, processes, START_TIMEOUT_S)

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
        wait_for_port(port, node, processes, START_TIMEOUT_S)

    # The CLI reads its SuperLink connections from $FLWR_HOME/config.toml.
    cli_env = env_with_home("cli")
    (homes / "cli" / "config.toml").write_text(tomli_w.dumps({
        "superlink": {
            "default": CONNECTION,
            CONNECTION: {"address": f"{HOST}:{link_http}", "insecure": True},
        }
    }))

    # `flwr run` builds the FAB from the repository and submits it; --stream follows
    # the ServerApp's log and returns once the run has finished.
    started = time.monotonic()
    run_cli = processes.start("flwr-run", [
        str(BIN / "flwr"), "run", str(REPO), CONNECTION,
        "--run-config", str(overrides_file), "--stream",
    ], env=cli_env, cwd=REPO)
    servers = ["superlink", *(node.name for node in nodes)]
    runs: list[dict] = []
    next_poll, stream_ended = started + STATUS_POLL_S, False
    while True:
        elapsed = time.monotonic() - started
        if elapsed > RUN_TIMEOUT_S:
            pytest.fail(f"the run did not finish within {RUN_TIMEOUT_S:.0f}s; last status: {runs}")
        processes.check_alive(servers)
        code = run_cli.popen.poll()
        if code not in (None, 0):
            pytest.fail(f"flwr run exited with code {code}:\n{run_cli.tail()}")
        # The stream ends with the run: ask for the status then, and now and then
        # before, in case the stream breaks off (each `flwr ls` costs CPU-seconds).
        if code == 0 and not stream_ended:
            stream_ended, next_poll = True, 0.0
        if time.monotonic() >= next_poll:
            runs = list_runs(cli_env, tmp_path)
            if runs and all(r["status"].startswith("finished") for r in runs):
                break
            next_poll = time.monotonic() + (5.0 if stream_ended else STATUS_POLL_S)
        time.sleep(1.0)

    assert len(runs) == 1, runs
    assert runs[0]["status"] == "finished:completed", (
        f"run {runs[0]['run-id']}: {runs[0]['status']} ({runs[0]['status-details']}); "
        "the ServerApp's log is in flwr-run.log and superlink.log below"
    )

    # What the ServerApp logged, on "the SuperLink host".
    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no MLflow experiment {experiment!r} at {tracking_uri}"
    mlflow_runs = client.search_runs([exp.experiment_id])
    assert len(mlflow_runs) == 1, [r.info.run_id for r in mlflow_runs]
    run = mlflow_runs[0]
    assert run.info.status == "FINISHED", run.info
    assert run.data.params["partition.num_clients"] == str(NUM_NODES)
    assert run.data.params["rounds"] == str(ROUNDS)

    accuracy = client.get_metric_history(run.info.run_id, "global_accuracy")
    assert sorted(m.step for m in accuracy) == list(range(ROUNDS + 1))
    assert all(0.0 <= m.value <= 1.0 for m in accuracy)
    clients_ok = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "clients_ok")}
    assert clients_ok == {r: NUM_NODES for r in range(1, ROUNDS + 1)}, clients_ok
    personalized = client.get_metric_history(run.info.run_id, "personalized_accuracy")
    assert sorted(m.step for m in personalized) == list(range(1, ROUNDS + 1))
