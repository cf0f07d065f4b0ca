"""Run a scenario through Flower's Simulation Engine (Ray backend), in this process.

The ServerApp runs in a thread here and logs to MLflow; each simulated client is a
ClientApp call on a Ray actor with the scenario's ``client.num_cpus`` /
``client.num_gpus`` (fractional GPUs where present). Server and clients checkpoint
into one folder (:mod:`flowerbed.server.checkpoint`), kept until the run finishes.
"""

from __future__ import annotations

import logging
import shutil
import sys
from typing import TextIO

from flwr.simulation import run_simulation

from flowerbed.client.app import build_client_app
from flowerbed.server.app import RunSummary, build_server_app
from flowerbed.server.checkpoint import Checkpointing, new_checkpointing
from flowerbed.sims.config import Scenario


def backend_config(scenario: Scenario, verbose: bool = False) -> dict:
    """Ray backend settings: per-client resources, and Ray kept quiet unless verbose."""
    return {
        "client_resources": {
            "num_cpus": scenario.client.num_cpus,
            "num_gpus": scenario.client.num_gpus,
        },
        "init_args": {
            "logging_level": logging.INFO if verbose else logging.ERROR,
            "log_to_driver": verbose,
            "include_dashboard": False,
            "configure_logging": True,
        },
    }


def simulate(scenario: Scenario, verbose: bool = False, progress: TextIO | None = sys.stdout,
             tags: dict[str, str] | None = None, run_name: str | None = None,
             checkpointing: Checkpointing | None = None) -> RunSummary:
    """Simulate ``scenario`` to the end (its MLflow run with extra ``tags``, named
    ``run_name``), or continue the run ``checkpointing.resume`` is a checkpoint of;
    returns the run's MLflow id and metrics."""
    checkpointing = checkpointing or new_checkpointing(scenario)
    summaries: list[RunSummary] = []
    errors: list[BaseException] = []
    try:
        run_simulation(
            server_app=build_server_app(scenario, on_finish=summaries.append, progress=progress, tags=tags,
                                        run_name=run_name, on_fail=errors.append, checkpointing=checkpointing),
            client_app=build_client_app(scenario, states=checkpointing.client_states() if checkpointing else None),
            num_supernodes=scenario.partition.num_clients,
            backend_config=backend_config(scenario, verbose),
            verbose_logging=verbose,
        )
    finally:
        shutdown_ray()
    if errors:  # the ServerApp's own error, not Flower's report of it
        raise errors[0]
    if not summaries:
        raise RuntimeError("the simulation ended without finishing its ServerApp")
    if checkpointing is not None:  # a finished run is not resumed
        shutil.rmtree(checkpointing.folder, ignore_errors=True)
    return summaries[0]


def shutdown_ray() -> None:
    """Stop this process's Ray (its actors included), so that no worker outlives the run."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
