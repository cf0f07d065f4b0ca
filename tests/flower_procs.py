"""Helpers for the integration tests that start Flower's own processes.

``flower-superlink``, ``flower-supernode`` and ``flwr run`` run as separate OS processes
from this virtualenv, each in a session of its own and logged to a file; the
:func:`processes` fixture stops every one of them (and what they started) when the
test ends, passed or failed. A test module uses the fixture by importing it::

    from flower_procs import processes  # noqa: F401  (pytest fixture)
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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from mlflow.tracking import MlflowClient

from flowerbed.server.tracking import process_alive

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the virtualenv's bin/: flwr, flower-superlink, ...
HOST = "127.0.0.1"

START_TIMEOUT_S = 90.0  # a SuperLink to listen, on a loaded 2-core machine
STATUS_POLL_S = 30.0  # `flwr ls` while the run's log is streaming (each costs CPU-seconds)


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
        # the app processes; in simulation, `flwr-simulation` and Ray's processes):
        # find every descendant before anything dies and reparents.
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
        while any(process_alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.2)
        for proc in self.procs:
            _signal(proc.popen.pid, signal.SIGKILL, group=True)
            try:
                proc.popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        for pid in pids:
            if process_alive(pid):
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
        # environment per run (the tests also pass the flag itself); flowerbed and its
        # dependencies are installed here.
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        # SuperLink and SuperNode start `flower-superexec`, `flwr-serverapp`,
        # `flwr-clientapp` and `flwr-simulation` by name.
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


# --- ports and the CLI ----------------------------------------------------------------


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


def wait_for_port(port: int, proc: Proc, procs: Processes, timeout: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        procs.check_alive([proc.name])
        try:
            with socket.create_connection((HOST, port), timeout=1.0):
                return
        except OSError:
            time.sleep(0.3)
    pytest.fail(f"{proc.name} did not listen on {HOST}:{port} within {timeout:.0f}s:\n{proc.tail()}")


def write_run_config(path: Path, overrides: dict[str, Any]) -> Path:
    """``overrides`` as one TOML file for ``flwr run --run-config FILE``.

    One file: 1.39 merges repeated ``--run-config`` pairs shallowly per table, and the
    file keeps quoting of a sqlite path simple. The SuperLink rejects an override whose
    key the app's run config lacks, so check that first, with a clear message.
    """
    with (REPO / "pyproject.toml").open("rb") as f:
        declared = set(tomllib.load(f)["tool"]["flwr"]["app"]["config"])
    missing = sorted(set(overrides) - declared)
    assert not missing, (
        f"pyproject.toml [tool.flwr.app.config] lacks {missing}: `flwr run --run-config` "
        "can only override keys declared there"
    )
    path.write_text(tomli_w.dumps(overrides))
    return path


def write_connection(flwr_home: Path, name: str, port: int) -> None:
    """The CLI's SuperLink connection ``name`` in ``$FLWR_HOME/config.toml``."""
    flwr_home.mkdir(parents=True, exist_ok=True)
    (flwr_home / "config.toml").write_text(tomli_w.dumps({
        "superlink": {
            "default": name,
            name: {"address": f"{HOST}:{port}", "insecure": True},
        }
    }))


def flwr_cli(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 60.0) -> str:
    out = subprocess.run([str(BIN / "flwr"), *args], capture_output=True, text=True,
                         env=env, cwd=cwd, timeout=timeout, stdin=subprocess.DEVNULL)
    if out.returncode != 0:
        raise RuntimeError(f"flwr {' '.join(args)} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    return out.stdout


def list_runs(connection: str, env: dict[str, str], cwd: Path) -> list[dict]:
    text = flwr_cli(["ls", connection, "--format", "json"], env, cwd)
    return json.loads(text[text.index("{"):])["runs"]


def wait_for_runs(run_cli: Proc | list[Proc], processes: Processes, servers: list[str], connection: str,
                  env: dict[str, str], cwd: Path, timeout: float, expected: int = 1) -> list[dict]:
    """Follow ``flwr run --stream`` (one or several, submitted together) until the
    SuperLink lists at least ``expected`` runs, all finished.

    Fails the test if a server process in ``servers`` dies, a ``flwr run`` fails, or the
    runs have not finished within ``timeout`` seconds; returns ``flwr ls``'s runs.
    """
    clis = run_cli if isinstance(run_cli, list) else [run_cli]
    started = time.monotonic()
    runs: list[dict] = []
    next_poll, streams_ended = started + STATUS_POLL_S, False
    while True:
        if time.monotonic() - started > timeout:
            pytest.fail(f"the runs did not finish within {timeout:.0f}s; last status: {runs}")
        processes.check_alive(servers)
        codes = [cli.popen.poll() for cli in clis]
        for cli, code in zip(clis, codes):
            if code not in (None, 0):
                pytest.fail(f"{cli.name} exited with code {code}:\n{cli.tail()}")
        # A stream ends with its run: ask for the status then, and now and then
        # before, in case a stream breaks off (each `flwr ls` costs CPU-seconds).
        if all(code == 0 for code in codes) and not streams_ended:
            streams_ended, next_poll = True, 0.0
        if time.monotonic() >= next_poll:
            runs = list_runs(connection, env, cwd)
            if len(runs) >= expected and all(r["status"].startswith("finished") for r in runs):
                return runs
            next_poll = time.monotonic() + (5.0 if streams_ended else STATUS_POLL_S)
        time.sleep(1.0)


def assert_one_completed(runs: list[dict]) -> None:
    assert len(runs) == 1, runs
    assert runs[0]["status"] == "finished:completed", (
        f"run {runs[0]['run-id']}: {runs[0]['status']} ({runs[0]['status-details']}); "
        "the ServerApp's log is in flwr-run.log and superlink.log below"
    )


# --- MLflow -------------------------------------------------------------------------


def assert_mlflow_run(tracking_uri: str, experiment: str, num_clients: int, rounds: int):
    """One FINISHED run in ``experiment``, with every round's metrics from every client."""
    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no MLflow experiment {experiment!r} at {tracking_uri}"
    mlflow_runs = client.search_runs([exp.experiment_id])
    assert len(mlflow_runs) == 1, [r.info.run_id for r in mlflow_runs]
    run = mlflow_runs[0]
    assert run.info.status == "FINISHED", run.info
    assert run.data.params["partition.num_clients"] == str(num_clients)
    assert run.data.params["rounds"] == str(rounds)

    accuracy = client.get_metric_history(run.info.run_id, "global_accuracy")
    assert sorted(m.step for m in accuracy) == list(range(rounds + 1))
    assert all(0.0 <= m.value <= 1.0 for m in accuracy)
    clients_ok = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "clients_ok")}
    assert clients_ok == {r: num_clients for r in range(1, rounds + 1)}, clients_ok
    personalized = client.get_metric_history(run.info.run_id, "personalized_accuracy")
    assert sorted(m.step for m in personalized) == list(range(1, rounds + 1))
    return run
