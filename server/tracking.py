"""One MLflow run per simulation, written as the rounds go.

Each round's metrics are logged the moment the round ends, so a run that fails
mid-way ends with status FAILED and keeps everything logged before the failure.
The embedded default store is a SQLite file (MLflow 3 refuses a plain ``./mlruns``
file store): ``mlflow ui --backend-store-uri sqlite:///mlflow.db`` shows every run.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import tomli_w
import torch
from mlflow.entities import Metric, Param, RunStatus
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from flowerbed.sims.config import Scenario, sqlite_file
from flowerbed.strategies import ResolvedStrategy

#: Tag set on every simulation run, so summaries and other runs can be told apart.
KIND_TAG = "flowerbed.kind"
MLFLOW_BATCH = 100  # MLflow accepts at most 100 params per log_batch call.
#: Tag of a run's resolved configuration (tracking settings left out): equal hashes, same run.
CONFIG_HASH_TAG = "config_hash"
#: Tags naming the process that logs a run, so a run whose process died can be found.
HOST_TAG, PID_TAG = "flowerbed.host", "flowerbed.pid"
#: Runs this process has open (run id -> client), for a signal handler to close.
_OPEN_RUNS: dict[str, MlflowClient] = {}


def end_open_runs(status: str = "KILLED") -> list[str]:
    """Mark every run this process has open ``status`` (a stop signal's handler); returns their ids."""
    ended = []
    for run_id, client in list(_OPEN_RUNS.items()):
        with contextlib.suppress(Exception):  # the store may be gone too: end what can be ended
            client.set_terminated(run_id, status=status)
            ended.append(run_id)
        _OPEN_RUNS.pop(run_id, None)
    return ended


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists and has not exited (a zombie has)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child has exited; only the reaping is missing
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True  # no /proc here: kill(pid, 0) answered


def end_orphaned_runs(client: MlflowClient, experiment_id: str) -> list[str]:
    """RUNNING runs of ``experiment_id`` logged from this host by a process that no longer
    exists (killed with SIGKILL, say): marked FAILED with the tag ``flowerbed.ended``."""
    found = client.search_runs([experiment_id], f"attributes.status = 'RUNNING' and tags.`{HOST_TAG}` = "
                                                f"'{socket.gethostname()}'")
    ended = []
    for run in found:
        pid = run.data.tags.get(PID_TAG, "")
        if pid.isdigit() and not process_alive(int(pid)):
            client.set_tag(run.info.run_id, "flowerbed.ended", f"its process {pid} died; marked FAILED later")
            client.set_terminated(run.info.run_id, status="FAILED")
            ended.append(run.info.run_id)
    return ended


def config_hash(scenario: Scenario) -> str:
    """A digest of everything that decides a run's metrics: the resolved scenario with
    every default filled in, less where it is logged and checkpointed."""
    tree = scenario.to_dict()
    tree.pop("mlflow", None)
    tree.pop("checkpoint", None)
    return hashlib.sha256(json.dumps(tree, sort_keys=True).encode()).hexdigest()[:16]


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def artifact_root(tracking_uri: str) -> str | None:
    """Artifacts of a SQLite store go beside the database file (``mlruns/`` there), not
    into whatever the working directory of the process that logs happens to be."""
    db = sqlite_file(tracking_uri)
    return None if db is None else (db.parent / "mlruns").as_uri()


def tracking_client(tracking_uri: str) -> MlflowClient:
    """An MlflowClient whose store exists and is up to date. A SQLite store is created
    (or its schema upgraded) under a lock, so runs started at once against a fresh
    database do not race MLflow's schema migration (one of them failed with ``table
    _alembic_tmp_experiments already exists``). The lock file is in the temporary folder,
    named after the database's path."""
    db = sqlite_file(tracking_uri)
    if db is None:
        return MlflowClient(tracking_uri=tracking_uri)
    digest = hashlib.sha256(str(db).encode()).hexdigest()[:16]
    with open(Path(tempfile.gettempdir()) / f"flowerbed-mlflow-{digest}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            return MlflowClient(tracking_uri=tracking_uri)  # builds (or upgrades) the store
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def get_or_create_experiment(client: MlflowClient, name: str) -> str:
    """The experiment's id, creating it if needed (a run started at the same moment may
    create it first: then it is read back)."""
    experiment = client.get_experiment_by_name(name)
    if experiment:
        return experiment.experiment_id
    root = artifact_root(client.tracking_uri)
    location = f"{root}/{urllib.parse.quote(name)}" if root else None
    try:
        return client.create_experiment(name, artifact_location=location)
    except MlflowException:
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


def format_progress(round_: int, rounds: int, metrics: dict[str, float]) -> str:
    """The live per-round line: round, clients, loss, accuracies, seconds."""
    parts = [f"round {round_:>3}/{rounds}"]
    if "clients_ok" in metrics:
        rejected = f" {int(metrics['clients_rejected'])} rejected" if metrics.get("clients_rejected") else ""
        on_gpu = f", {int(metrics['clients_on_gpu'])} on GPU" if metrics.get("clients_on_gpu") else ""
        parts.append(f"clients {int(metrics['clients_ok'])} ok {int(metrics['clients_failed'])} failed{rejected}{on_gpu}")
    for key, label in (("train_loss", "loss"), ("global_accuracy", "global acc"),
                       ("personalized_accuracy", "pers acc")):
        if key in metrics:
            parts.append(f"{label} {metrics[key]:.4f}")
    if "round_seconds" in metrics:
        parts.append(f"{metrics['round_seconds']:.1f}s")
    return " | ".join(parts)


class RunTracker:
    """Logs one simulation to MLflow: params, per-round metrics, artifacts, tags."""

    def __init__(self, scenario: Scenario, strategy: ResolvedStrategy, progress: TextIO | None = sys.stdout,
                 tags: dict[str, str] | None = None, run_name: str | None = None,
                 resume_run_id: str | None = None) -> None:
        self.scenario = scenario
        self.resume_run_id = resume_run_id
        self.strategy = strategy
        self.extra_tags = dict(tags or {})
        self.run_name = run_name
        self.client = tracking_client(scenario.mlflow.tracking_uri)
        self.progress = progress
        self.run_id: str | None = None
        self.history: dict[int, dict[str, float]] = {}

    @contextlib.contextmanager
    def active(self) -> Iterator["RunTracker"]:
        """Create the run; end it FINISHED, FAILED (exception) or KILLED (interrupt)."""
        s = self.scenario
        experiment_id = get_or_create_experiment(self.client, s.mlflow.experiment)
        method = self.strategy.method
        tags = {
            KIND_TAG: "simulation",
            "strategy": s.strategy.name,
            # The strategy with its add-ons and non-default options: what compare groups by.
            "method": method,
            "scenario": s.name or "custom",
            "dataset": s.dataset.name,
            "partition": s.partition.kind,
            "seed": str(s.seed),
            "rounds": str(s.rounds),
            CONFIG_HASH_TAG: config_hash(s),
            "git_commit": git_commit(),
            HOST_TAG: socket.gethostname(),
            PID_TAG: str(os.getpid()),
            **self.extra_tags,
        }
        end_orphaned_runs(self.client, experiment_id)
        if self.resume_run_id:  # the same run goes on: RUNNING again, from this process
            self.run_id = self.resume_run_id
            self.client.update_run(self.run_id, status=RunStatus.to_string(RunStatus.RUNNING))
            for key in (HOST_TAG, PID_TAG, "git_commit", *self.extra_tags):
                self.client.set_tag(self.run_id, key, tags[key])
        else:
            name = self.run_name or f"{method}-{s.name or s.dataset.name}-seed{s.seed}"
            self.run_id = self.client.create_run(experiment_id, tags=tags, run_name=name).info.run_id
        _OPEN_RUNS[self.run_id] = self.client
        status = RunStatus.to_string(RunStatus.FAILED)
        try:
            if not self.resume_run_id:
                self._log_config()
            yield self
            status = RunStatus.to_string(RunStatus.FINISHED)
        except KeyboardInterrupt:
            status = RunStatus.to_string(RunStatus.KILLED)
            raise
        finally:
            if _OPEN_RUNS.pop(self.run_id, None) is not None:  # else a stop signal ended it
                self.client.set_terminated(self.run_id, status=status)

    def _log_config(self) -> None:
        values = self.scenario.to_run_config()
        # Every option of the strategy and its add-ons, defaults included (paper vs code choices).
        values.update(self.strategy.logged_params())
        params = [Param(k, str(v)) for k, v in values.items()]
        for start in range(0, len(params), MLFLOW_BATCH):
            self.client.log_batch(self.run_id, params=params[start:start + MLFLOW_BATCH])
        self.client.log_text(self.run_id, tomli_w.dumps(self.scenario.to_dict()), "config.toml")

    def log_round(self, server_round: int, metrics: dict[str, float]) -> None:
        """Log one round's metrics at ``step = server_round`` and print the progress line."""
        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, server_round) for k, v in sorted(metrics.items())]
        self.client.log_batch(self.run_id, metrics=batch)
        self.history.setdefault(server_round, {}).update(metrics)
        if self.progress is not None:
            print(format_progress(server_round, self.scenario.rounds, metrics), file=self.progress, flush=True)

    def log_final(self, metrics: dict[str, float]) -> None:
        """Whole-run figures, logged once at the last round's step."""
        if metrics:
            now = int(time.time() * 1000)
            batch = [Metric(k, float(v), now, self.scenario.rounds) for k, v in metrics.items()]
            self.client.log_batch(self.run_id, metrics=batch)

    def set_tag(self, key: str, value: str) -> None:
        self.client.set_tag(self.run_id, key, value)

    def log_dict(self, data: dict[str, Any], path: str) -> None:
        self.client.log_dict(self.run_id, data, path)

    def log_partition(self) -> None:
        """The per-client statistics (JSON) and the clients x classes heatmap (PNG)."""
        from flowerbed.sims.partitions import scenario_partition
        from flowerbed.sims.stats import client_stats, heatmap

        records = client_stats(self.scenario)
        groups = scenario_partition(self.scenario).class_groups
        self.client.log_dict(self.run_id, {"clients": records, "class_groups": groups},
                             "partition/clients.json")
        with tempfile.TemporaryDirectory() as tmp:
            path = heatmap(records, Path(tmp) / "partition.png",
                           title=f"{self.scenario.dataset.name}, {self.scenario.partition.kind}", class_groups=groups)
            self.client.log_artifact(self.run_id, str(path), "partition")

    def log_arrays(self, aggregated: dict[str, torch.Tensor], name: str = "global_model") -> None:
        """``<name>.pt``: what the server aggregated, exactly (replaced at each checkpoint)."""
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"{name}.pt"
            torch.save(aggregated, path)
            self.client.log_artifact(self.run_id, str(path))

    def log_model(self, model: torch.nn.Module, aggregated: dict[str, torch.Tensor],
                  name: str = "global_model") -> None:
        """The global model as an MLflow PyTorch model (``mlflow.pytorch.load_model(
        "runs:/<id>/global_model")`` loads it), and what the server aggregated, exactly
        (``global_model.pt``: no parameter a client kept)."""
        import mlflow.pytorch

        self.log_arrays(aggregated, name)
        with tempfile.TemporaryDirectory() as tmp:
            logger = logging.getLogger("mlflow.pytorch")
            level = logger.level
            logger.setLevel(logging.ERROR)  # its pickle-format caution: our own classes, our own file
            try:
                with _no_requirement_check():
                    mlflow.pytorch.save_model(model, Path(tmp) / name, serialization_format="pickle",
                                              pip_requirements=[f"torch=={torch.__version__.split('+')[0]}",
                                                                "flowerbed"])
            finally:
                logger.setLevel(level)
            self.client.log_artifacts(self.run_id, str(Path(tmp) / name), name)


@contextlib.contextmanager
def _no_requirement_check():
    """MLflow checks the requirements it is given against every installed distribution
    (a scan of all their metadata: 1.5 CPU-seconds, a warning at most); ours are this
    process's own torch and flowerbed, satisfied by construction."""
    import mlflow.utils.environment as environment

    check = environment.warn_dependency_requirement_mismatches
    environment.warn_dependency_requirement_mismatches = lambda requirements: None
    try:
        yield
    finally:
        environment.warn_dependency_requirement_mismatches = check
