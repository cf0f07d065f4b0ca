"""Checkpoint and resume: a run stopped after some rounds and resumed from its checkpoint
ends where the uninterrupted run does, metric for metric, in the same MLflow run; the
clients' kept state (heads, masks, optimizer moments) and the strategy's own state
(FED-PUB's personalized models) come back, though the nodes' ids change."""

from __future__ import annotations

from pathlib import Path

import pytest
from inprocess import InProcessGrid
from mlflow.tracking import MlflowClient

import flowerbed.server.app as server_app
from flowerbed.client.app import build_client_app
from flowerbed.client.checkpoint import ClientStates
from flowerbed.server.app import run_server
from flowerbed.server.checkpoint import SERVER_FILE, Checkpointing, resumable
from flowerbed.sims.config import ConfigError, load_scenario

REPO = Path(__file__).resolve().parents[1]
ROUNDS, STOP_AT = 4, 3
#: Not compared: wall time.
TIMING = {"round_seconds"}
CASES = {
    # The client keeps its head (Context.state) and its SGD momentum across rounds; half
    # the clients a round, so the sampling generator matters too.
    "fedper": ("quickstart.toml", ["strategy.name='fedper'", "client.keep_optimizer=true",
                                   "client.momentum=0.9", "sampling.fraction_train=0.5"]),
    "fedavg": ("quickstart.toml", ["sampling.fraction_train=0.5"]),
    # The client keeps its local head phi; BatchNorm backbone, augmentation on.
    "fedloge": ("fedloge_fmnist_lt.toml", ["model.name='mlp_bn'", "partition.num_clients=10", "client.batch_size=64",
                                          "client.local_epochs=1", "sampling.fraction_train=0.5"]),
    # Server state (the personalized models, per node) and client masks + Adam state.
    "fedpub": ("fedpub_cora_disjoint5.toml", ["sampling.fraction_train=0.6", "client.local_epochs=1"]),
}


def _scenario(tmp_path: Path, case: str):
    file, overrides = CASES[case]
    return load_scenario(REPO / "sims" / file, [*overrides, f"rounds={ROUNDS}", "sampling.evaluate_every=1",
                                                f"mlflow.tracking_uri='sqlite:///{tmp_path / 'mlflow.db'}'",
                                                f"mlflow.experiment='{case}'"])


def _run(scenario, checkpointing: Checkpointing, node_id_base: int):
    """The ServerApp's logic over fresh in-process nodes (empty contexts, as new SuperNodes)."""
    app = build_client_app(scenario, states=checkpointing.client_states())
    grid = InProcessGrid(app, scenario.partition.num_clients, node_id_base=node_id_base)
    return run_server(grid, scenario, progress=None, checkpointing=checkpointing)


def _stop_at(monkeypatch, server_round: int) -> None:
    """Make the server fail while scoring ``server_round`` (after its training)."""
    real, calls = server_app.evaluate_global, []

    def failing(models, test):
        calls.append(1)
        if len(calls) == server_round + 1:  # round 0 is scored too
            raise KeyboardInterrupt  # as Ctrl-C would
        return real(models, test)

    monkeypatch.setattr(server_app, "evaluate_global", failing)


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_resumed_run_ends_where_the_uninterrupted_one_does(tmp_path, monkeypatch, case):
    scenario = _scenario(tmp_path, case)
    whole = _run(scenario, Checkpointing(tmp_path / "whole", every=1), node_id_base=1000)

    folder = tmp_path / "stopped"
    with monkeypatch.context() as patch:
        _stop_at(patch, STOP_AT)
        with pytest.raises(KeyboardInterrupt):
            _run(scenario, Checkpointing(folder, every=1), node_id_base=2000)
    client = MlflowClient(scenario.mlflow.tracking_uri)
    stopped = [r for r in client.search_runs([client.get_experiment_by_name(case).experiment_id])
               if r.info.run_id != whole.run_id]
    assert [r.info.status for r in stopped] == ["KILLED"]
    run_id = stopped[0].info.run_id
    # The model of the last checkpoint was logged before the stop.
    assert "global_model.pt" in {a.path for a in client.list_artifacts(run_id)}

    again, checkpointing = resumable(run_id, scenario.mlflow.tracking_uri)
    assert checkpointing.resume_round == STOP_AT - 1 and again == scenario
    resumed = _run(again, checkpointing, node_id_base=3000)  # new node ids, empty contexts

    assert resumed.run_id == run_id
    for r in range(1, ROUNDS + 1):  # every metric of every round, to the bit
        assert set(resumed.history[r]) == set(whole.history[r])
        for key in set(whole.history[r]) - TIMING:
            assert resumed.history[r][key] == whole.history[r][key], (r, key)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.metrics["global_accuracy"] == whole.history[ROUNDS][
        "global_accuracy"]


def test_resume_refuses_what_it_cannot_continue(tmp_path, monkeypatch):
    scenario = _scenario(tmp_path, "fedper")
    uri = scenario.mlflow.tracking_uri
    finished = _run(scenario, Checkpointing(tmp_path / "a", every=1), node_id_base=1000)
    with pytest.raises(ConfigError, match="FINISHED"):
        resumable(finished.run_id, uri)
    with pytest.raises(ConfigError, match="no such MLflow run"):
        resumable("0123456789abcdef", uri)
    # Stopped while scoring round 1 (before any checkpoint): nothing to resume from.
    with monkeypatch.context() as patch:
        _stop_at(patch, 1)
        with pytest.raises(KeyboardInterrupt):
            _run(scenario, Checkpointing(tmp_path / "b", every=1), node_id_base=1000)
    with pytest.raises(ConfigError, match=f"{SERVER_FILE} not found"):
        resumable("last", uri)


def test_a_client_keeps_its_newest_state_at_or_before_the_last_checkpoint(tmp_path):
    """With checkpoints every 3 rounds a client that trained in rounds 1, 2, 4 and 5
    needs round 2's state until round 6 is checkpointed; it keeps no more."""
    import numpy as np
    from flwr.app import Array, ArrayRecord, ConfigRecord, Context, RecordDict

    def saved_at(r: int) -> list[int]:
        context.state["head"] = ArrayRecord({"w": Array(np.full(2, float(r)))})
        states.save(context, 0, r)
        return sorted(states.files(0))

    states = ClientStates(tmp_path, every=3)
    context = Context(run_id=1, node_id=1, node_config={"partition-id": 0}, state=RecordDict(), run_config={})
    assert [saved_at(r) for r in (1, 2, 4, 5)] == [[1], [1, 2], [2, 4], [2, 4, 5]]
    # The run stopped in round 6: it resumes after round 3 from the client's round-2
    # state; the files the stopped attempt wrote after round 3 are gone.
    fresh = Context(run_id=2, node_id=9, node_config={"partition-id": 0}, state=RecordDict(), run_config={})
    ClientStates(tmp_path, every=3, resume_round=3).restore(fresh, 0)
    assert fresh.state["head"]["w"].numpy().tolist() == [2.0, 2.0]
    assert sorted(states.files(0)) == [2]
    assert isinstance(fresh.state["flowerbed.checkpoint"], ConfigRecord)
    context.state["head"] = ArrayRecord({"w": Array(np.full(2, 7.0))})
    states.save(context, 0, 7)
    # Its state at the end of round 6 (checkpointed by now) is still round 2's.
    assert sorted(states.files(0)) == [2, 7]


def test_a_killed_flowerbed_run_resumes_to_the_same_end(tmp_path):
    """The real thing: `flowerbed run` on Ray killed with SIGKILL (no handler runs) after
    round 2, then `flowerbed run --resume last`: the same MLflow run, FINISHED, with the
    metrics of an uninterrupted run of the same scenario. FED-PUB: the server's
    per-node models and the clients' masks and Adam moments must all come back, on
    Ray actors, under new node ids."""
    import os
    import signal
    import subprocess
    import sys

    flowerbed = Path(sys.executable).parent / "flowerbed"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = [str(REPO / "sims" / "fedpub_cora_disjoint5.toml"), "--set", "rounds=8", "--set", "client.local_epochs=1",
            "--set", "sampling.fraction_train=0.6", "--tracking-uri", uri]
    whole = subprocess.run([str(flowerbed), "run", *args, "--experiment", "whole"], capture_output=True, text=True,
                           timeout=600)
    assert whole.returncode == 0, whole.stdout + whole.stderr
    run = subprocess.Popen([str(flowerbed), "run", *args, "--experiment", "killed"], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, start_new_session=True)
    seen = []
    for line in run.stdout:
        seen.append(line)
        if line.startswith("round   2/"):
            break
    else:
        raise AssertionError("the run ended before round 2:\n" + "".join(seen))
    os.killpg(run.pid, signal.SIGKILL)
    run.wait(timeout=60)
    resumed = subprocess.run([str(flowerbed), "run", "--resume", "last", "--tracking-uri", uri],
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resuming MLflow run" in resumed.stdout

    client = MlflowClient(uri)
    (reference,) = client.search_runs([client.get_experiment_by_name("whole").experiment_id])
    (logged,) = client.search_runs([client.get_experiment_by_name("killed").experiment_id])
    assert logged.info.status == "FINISHED"
    for key in ("global_accuracy", "train_loss", "personalized_accuracy", "fedpub_alpha_self"):
        # The rounds after the checkpoint that the killed attempt had logged are logged
        # again by the resumed one: the later value of a step is the run's.
        got = {m.step: m.value for m in sorted(client.get_metric_history(logged.info.run_id, key),
                                               key=lambda m: m.timestamp)}
        want = {m.step: m.value for m in client.get_metric_history(reference.info.run_id, key)}
        assert got == want, key
    assert not Path(logged.data.tags["flowerbed.checkpoint"]).exists()  # removed once FINISHED
