"""Checkpoint and resume a simulation.

After every ``checkpoint.every`` rounds (and the last) the ServerApp writes, all or
nothing, ``<folder>/server.pt``: the round, the global arrays, the strategy's own state
(its :class:`~flowerbed.strategies.contract.ServerHooks` ``state``: per-client
personalized models, say, keyed by partition since node ids change between runs),
the random number generators (Flower samples clients with the module-level
``random``), the failure policy's count and every round's metrics. The clients' kept
state goes beside it (:mod:`flowerbed.client.checkpoint`). The MLflow run carries the
folder in the tag ``flowerbed.checkpoint``.

``flowerbed run --resume RUN_ID`` continues the same MLflow run: the roster is built
anew, the strategy and the generators are restored, and Flower's own round loop runs
the remaining rounds, numbered on from the checkpoint (:func:`continue_from`). With
the same seed the resumed run ends where the uninterrupted one does, metric for metric.
"""

from __future__ import annotations

import io
import random
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flowerbed.client.checkpoint import ClientStates, write_atomically
from flowerbed.sims.config import Scenario, sqlite_file

#: The MLflow tag naming a run's checkpoint folder.
CHECKPOINT_TAG = "flowerbed.checkpoint"
SERVER_FILE = "server.pt"
FORMAT = 1


@dataclass
class Checkpointing:
    """Where one run checkpoints, how often, and, when it resumes, the checkpoint it
    resumes from (as :func:`load_server_checkpoint` returns it)."""

    folder: Path
    every: int
    resume: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def resume_round(self) -> int:
        return int(self.resume["round"]) if self.resume else 0

    def due(self, server_round: int, rounds: int) -> bool:
        return self.every > 0 and server_round > 0 and (server_round % self.every == 0 or server_round == rounds)

    def client_states(self) -> ClientStates:
        return ClientStates(self.folder, self.every, self.resume_round)


def checkpoint_root(scenario: Scenario) -> Path:
    """``checkpoint.dir``, else ``checkpoints`` beside a SQLite store, else ``./checkpoints``."""
    if scenario.checkpoint.dir:
        return Path(scenario.checkpoint.dir).resolve()
    db = sqlite_file(scenario.mlflow.tracking_uri)
    return (db.parent if db is not None else Path.cwd()) / "checkpoints"


def new_checkpointing(scenario: Scenario) -> Checkpointing | None:
    """A fresh folder for a new run of ``scenario``, or None if it does not checkpoint."""
    if scenario.checkpoint.every == 0:
        return None
    return Checkpointing(checkpoint_root(scenario) / uuid.uuid4().hex[:16], scenario.checkpoint.every)


def rng_state() -> dict[str, Any]:
    return {"random": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["random"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def save_server_checkpoint(folder: Path, state: dict[str, Any]) -> None:
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, **state}, buffer)
    write_atomically(folder / SERVER_FILE, buffer.getvalue())


def load_server_checkpoint(folder: Path) -> dict[str, Any]:
    """The checkpoint in ``folder``; FileNotFoundError if none was written."""
    # Not weights-only: it holds generator states and metric histories this program
    # wrote itself, into a folder it made.
    state = torch.load(folder / SERVER_FILE, weights_only=False)
    if state.get("format") != FORMAT:
        raise ValueError(f"{folder / SERVER_FILE}: checkpoint format {state.get('format')}, expected {FORMAT}")
    return state


def continue_from(strategy, offset: int) -> None:
    """Make Flower's round loop, which counts from 1, continue after round ``offset``:
    the strategy's four round methods see round ``r + offset`` (wrapped on the instance,
    outermost, as the failure policy wraps ``aggregate_train``)."""
    for name in ("configure_train", "aggregate_train", "configure_evaluate", "aggregate_evaluate"):
        method = getattr(strategy, name)

        def shifted(server_round, *args, _method=method, **kwargs):
            return _method(server_round + offset, *args, **kwargs)

        setattr(strategy, name, shifted)


def check_store(which: str, tracking_uri: str) -> None:
    """A SQLite store to resume from must exist (checked before MLflow loads)."""
    from flowerbed.sims.config import ConfigError

    db = sqlite_file(tracking_uri)
    if db is not None and not db.is_file():
        raise ConfigError(f"--resume {which}: no MLflow store at {tracking_uri} (give its --tracking-uri)")


def resumable(which: str, tracking_uri: str) -> tuple[Scenario, Checkpointing]:
    """The scenario and checkpoint of MLflow run ``which`` (an id, or ``last``: the
    newest unfinished run with a checkpoint) in ``tracking_uri``; ConfigError if it
    cannot be resumed."""
    import socket

    from flowerbed.server.tracking import HOST_TAG, PID_TAG, process_alive, tracking_client
    from flowerbed.sims.config import ConfigError, parse_scenario

    check_store(which, tracking_uri)
    client = tracking_client(tracking_uri)
    if which == "last":
        experiments = [e.experiment_id for e in client.search_experiments()]
        found = [r for r in client.search_runs(experiments, f"tags.`{CHECKPOINT_TAG}` LIKE '%'",
                                               order_by=["attributes.start_time DESC"])
                 if r.info.status != "FINISHED"] if experiments else []
        if not found:
            raise ConfigError(f"--resume last: no unfinished run with a checkpoint in {tracking_uri}")
        run = found[0]
    else:
        try:
            run = client.get_run(which)
        except Exception:  # noqa: BLE001 - MLflow's not-found error varies by store
            raise ConfigError(f"--resume {which}: no such MLflow run in {tracking_uri}") from None
    run_id, tags = run.info.run_id, run.data.tags
    if run.info.status == "FINISHED":
        raise ConfigError(f"--resume {run_id}: the run is FINISHED")
    pid = tags.get(PID_TAG, "")
    if (run.info.status == "RUNNING" and tags.get(HOST_TAG) == socket.gethostname() and pid.isdigit()
            and process_alive(int(pid))):
        raise ConfigError(f"--resume {run_id}: the run is still running (process {pid})")
    if CHECKPOINT_TAG not in tags:
        raise ConfigError(f"--resume {run_id}: the run has no checkpoint (made with checkpoint.every = 0)")
    folder = Path(tags[CHECKPOINT_TAG])
    try:
        checkpoint = load_server_checkpoint(folder)
    except FileNotFoundError:
        raise ConfigError(f"--resume {run_id}: {folder / SERVER_FILE} not found (no round was checkpointed "
                          "before the run stopped, or the folder was removed)") from None
    scenario = parse_scenario(checkpoint["scenario"])
    # The store it was found in, as named here (a relative SQLite path may differ).
    scenario = scenario.model_copy(update={"mlflow": scenario.mlflow.model_copy(update={"tracking_uri": tracking_uri})})
    return scenario, Checkpointing(folder, scenario.checkpoint.every, resume=checkpoint)
