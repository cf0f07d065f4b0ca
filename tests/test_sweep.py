"""``flowerbed sweep``: a grid of runs that, killed mid-grid, continues where it stopped
without repeating a finished run; bad cells fail before any run starts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from flowerbed.server.cli import EXIT_BAD_INPUT, main

REPO = Path(__file__).resolve().parents[1]


def _finished(uri: str, experiment: str) -> list:
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    return client.search_runs([found.experiment_id], "attributes.status = 'FINISHED'")


def test_a_killed_sweep_resumes_and_repeats_no_run(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    command = [sys.executable, "-c", "import sys; from flowerbed.server.cli import main; sys.exit(main())",
               "sweep", str(REPO / "sims" / "quickstart.toml"), "--strategies", "fedavg,fedper", "--seeds", "0",
               "--set", "rounds=2", "--set", "partition.num_clients=4", "--tracking-uri", uri,
               "--experiment", "sweep-kill", "--output", str(tmp_path / "cmp.png")]
    first = subprocess.Popen(command, cwd=tmp_path, start_new_session=True, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not _finished(uri, "sweep-kill"):
        assert first.poll() is None, "the sweep ended before its first run finished"
        assert time.monotonic() < deadline, "no run finished in 300 s"
        time.sleep(0.5)
    os.killpg(first.pid, signal.SIGKILL)  # between runs, or inside the second: either way not finished
    first.wait()
    (done,) = _finished(uri, "sweep-kill")

    resumed = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"[1/2] fedavg seed 0: finished already (run {done.info.run_id}), skipped" in resumed.stdout
    assert "[2/2] fedper seed 0: done" in resumed.stdout
    runs = _finished(uri, "sweep-kill")
    assert sorted(r.data.tags["method"] for r in runs) == ["fedavg", "fedper"]  # each exactly once
    assert len({r.data.tags["config_hash"] for r in runs}) == 2
    assert all(r.data.tags["sweep"] == "quickstart:fedavg,fedper" for r in runs)
    assert "| quickstart / fedper | 1 | 2 |" in resumed.stdout  # the comparison of the grid
    assert (tmp_path / "cmp.md").is_file()


def test_a_bad_cell_fails_before_any_run(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    code = main(["sweep", str(REPO / "sims" / "quickstart.toml"), "--strategies", "fedavg,fedpub",
                 "--seeds", "0", "--tracking-uri", uri])
    err = capsys.readouterr().err
    assert code == EXIT_BAD_INPUT and len(err.strip().splitlines()) == 1
    assert "'fedpub' needs model.name in ['masked_gcn']" in err
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.parametrize("args,expected", [(["--strategies", "fedavg", "--seeds", ""], "--seeds"),
                                           (["--strategies", "nope"], "strategy.name: unknown strategy 'nope'")])
def test_sweep_arguments_are_checked(args, expected, capsys):
    assert main(["sweep", str(REPO / "sims" / "quickstart.toml"), *args]) == EXIT_BAD_INPUT
    assert expected in capsys.readouterr().err
