"""Clean stops: Ctrl-C (SIGINT to the process group) ends a `flowerbed run` promptly,
its MLflow run KILLED with the rounds logged so far, and no process of it (Ray's
workers included) left behind; a run whose process was killed outright is marked FAILED
by the next run on the same experiment."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

from mlflow.tracking import MlflowClient

from flowerbed.server.tracking import HOST_TAG, PID_TAG, end_orphaned_runs, tracking_client

REPO = Path(__file__).resolve().parents[1]
FLOWERBED = Path(sys.executable).parent / "flowerbed"
# A hang, not a speed: the run must be gone long before this.
EXIT_DEADLINE_S = 30


def processes_with(marker: str) -> list[int]:
    """Pids of the processes whose environment carries ``marker`` (a run's descendants)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "environ").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def test_sigint_ends_the_run_killed_with_its_rounds_and_leaves_no_process(tmp_path):
    marker = f"FLOWERBED_STOP_TEST={uuid.uuid4().hex}"
    key, value = marker.split("=")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run = subprocess.Popen([str(FLOWERBED), "run", str(REPO / "sims" / "quickstart.toml"), "--set", "rounds=500",
                            "--tracking-uri", uri, "--experiment", "stops"],
                           env={**os.environ, key: value}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, start_new_session=True)
    seen = []
    for line in run.stdout:  # the progress lines; round 2 logged means two rounds kept
        seen.append(line)
        if line.startswith("round   2/"):
            break
    else:
        raise AssertionError("the run ended before round 2:\n" + "".join(seen))
    os.killpg(run.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
    output, _ = run.communicate(timeout=EXIT_DEADLINE_S)
    assert run.returncode == 128 + signal.SIGINT, output
    client = MlflowClient(uri)
    (logged,) = client.search_runs([client.get_experiment_by_name("stops").experiment_id])
    assert logged.info.status == "KILLED"
    assert {1, 2} <= {m.step for m in client.get_metric_history(logged.info.run_id, "train_loss")}
    deadline = time.monotonic() + EXIT_DEADLINE_S
    while (left := processes_with(marker)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not left, f"processes of the run left behind: {left}"


def test_a_finished_run_leaves_no_process(tmp_path):
    marker = f"FLOWERBED_STOP_TEST={uuid.uuid4().hex}"
    key, value = marker.split("=")
    done = subprocess.run([str(FLOWERBED), "run", str(REPO / "sims" / "quickstart.toml"), "--set", "rounds=1",
                           "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"],
                          env={**os.environ, key: value}, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    deadline = time.monotonic() + EXIT_DEADLINE_S
    while (left := processes_with(marker)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not left, f"processes of the run left behind: {left}"


def test_a_run_whose_process_died_is_marked_failed(tmp_path):
    client = tracking_client(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("orphans")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    host = socket.gethostname()
    orphan = client.create_run(experiment, tags={HOST_TAG: host, PID_TAG: dead.stdout.strip()})
    alive = client.create_run(experiment, tags={HOST_TAG: host, PID_TAG: str(os.getpid())})
    assert end_orphaned_runs(client, experiment) == [orphan.info.run_id]
    assert client.get_run(orphan.info.run_id).info.status == "FAILED"
    assert client.get_run(alive.info.run_id).info.status == "RUNNING"
