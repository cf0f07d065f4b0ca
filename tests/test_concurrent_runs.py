"""Runs started at the same moment against one fresh SQLite store (the default) all
finish: the store's schema is created under a lock, the experiment by whichever comes
first."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

REPO = Path(__file__).resolve().parents[1]
# One process: wait for the start signal (so that all begin together, imports done),
# then open a run with the tracker `flowerbed run` uses, log a round and finish it.
ONE_RUN = """
import sys, time
from pathlib import Path
from flowerbed.server.tracking import RunTracker
from flowerbed.sims.config import load_scenario
from flowerbed.strategies import resolve_strategy
uri, go = sys.argv[1], Path(sys.argv[2])
scenario = load_scenario(Path(sys.argv[3]), [f"mlflow.tracking_uri='{uri}'", "mlflow.experiment='together'"])
resolved = resolve_strategy(scenario)
Path(sys.argv[4]).touch()
while not go.exists():
    time.sleep(0.01)
tracker = RunTracker(scenario, resolved, progress=None)
with tracker.active():
    tracker.log_round(1, {"train_loss": 1.0})
"""


@pytest.mark.parametrize("count", [2, 4])
def test_runs_started_together_on_a_fresh_store_all_finish(count, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    go = tmp_path / "go"
    ready = [tmp_path / f"ready{i}" for i in range(count)]
    procs = [subprocess.Popen([sys.executable, "-c", ONE_RUN, uri, str(go), str(REPO / "sims" / "quickstart.toml"),
                               str(flag)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for flag in ready]
    deadline = time.monotonic() + 240
    while not all(flag.exists() for flag in ready) and time.monotonic() < deadline:
        time.sleep(0.05)
    go.touch()
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * count, "\n".join(outputs)
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("together").experiment_id])
    assert sorted(r.info.status for r in runs) == ["FINISHED"] * count
