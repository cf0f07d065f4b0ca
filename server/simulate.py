"""Run a scenario in simulation, in this process, on Ray.

The ServerApp runs here and logs to MLflow; each simulated client is a ClientApp call
on a Ray actor with the scenario's ``client.num_cpus`` / ``client.num_gpus``
(fractional GPUs where present). Two engines (``simulation.engine``), the same
metrics: ``actors`` (default), flowerbed's grid over a pool of actors
(:mod:`flowerbed.server.engine`), and ``flower``, Flower's Simulation Engine
(``run_simulation``). Ray is started here, or attached to with
``simulation.ray_address`` (``flowerbed run --ray-address``). Server and clients
checkpoint into one folder (:mod:`flowerbed.server.checkpoint`), kept until the run
finishes.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import sys
import threading
import time
from typing import TextIO

from flowerbed.server.checkpoint import Checkpointing, new_checkpointing
from flowerbed.server.resources import check_before_ray, client_resources, pool_size
from flowerbed.sims.config import Scenario

def backend_config(scenario: Scenario, verbose: bool = False) -> dict:
    """Flower's Ray backend settings: per-client resources, Ray kept quiet unless verbose."""
    return {"client_resources": client_resources(scenario), "init_args": ray_init_args(verbose)}


def ray_init_args(verbose: bool) -> dict:
    return {
        "logging_level": logging.INFO if verbose else logging.ERROR,
        "log_to_driver": verbose,
        "include_dashboard": False,
        "configure_logging": True,
    }


class Phases:
    """A line per start-up phase with its seconds (``flowerbed: ray ... 2.1 s``)."""

    def __init__(self, progress: TextIO | None) -> None:
        self.progress = progress
        self.t0 = time.perf_counter()

    def done(self, what: str, since: float | None = None, at_least: float = 0.0) -> None:
        """Print ``what`` with the seconds since the last phase (or ``since``), unless
        that took under ``at_least`` (a step a check before the run did already)."""
        took = time.perf_counter() - (self.t0 if since is None else since)
        if self.progress is not None and took >= at_least:
            print(f"flowerbed: {what} ({took:.1f} s)", file=self.progress, flush=True)
        self.t0 = time.perf_counter()


def simulate(scenario: Scenario, verbose: bool = False, progress: TextIO | None = sys.stdout,
             tags: dict[str, str] | None = None, run_name: str | None = None,
             checkpointing: Checkpointing | None = None):  # -> RunSummary
    """Simulate ``scenario`` to the end (its MLflow run with extra ``tags``, named
    ``run_name``), or continue the run ``checkpointing.resume`` is a checkpoint of;
    returns the run's MLflow id and metrics."""
    settings = scenario.simulation
    address = settings.ray_address if settings else None
    check_before_ray(scenario)  # a cluster's nodes are checked once attached
    from flowerbed.client.app import build_client_app
    from flowerbed.server.app import build_server_app

    checkpointing = checkpointing or new_checkpointing(scenario)
    summaries: list = []
    errors: list[BaseException] = []
    server_app = build_server_app(scenario, on_finish=summaries.append, progress=progress, tags=tags,
                                  run_name=run_name, on_fail=errors.append, checkpointing=checkpointing)
    states = checkpointing.client_states() if checkpointing else None
    if settings is not None and settings.engine == "flower":
        run_flower_engine(scenario, server_app, build_client_app(scenario, states=states), verbose, address)
    else:
        # The client halves registered here, a user's registered at run time included,
        # travel to the actors with the recipe (an actor's own registry has the built-in ones).
        from flowerbed.strategies import client_halves

        run_actor_engine(scenario, server_app, (scenario, client_halves(), states), verbose, address, progress)
    if errors:  # the ServerApp's own error, not Flower's report of it
        raise errors[0]
    if not summaries:
        raise RuntimeError("the simulation ended without finishing its ServerApp")
    if checkpointing is not None:  # a finished run is not resumed
        shutil.rmtree(checkpointing.folder, ignore_errors=True)
    return summaries[0]


def run_flower_engine(scenario: Scenario, server_app, client_app, verbose: bool, address: str | None) -> None:
    """Flower's Simulation Engine (its in-memory SuperLink state, its actor pool)."""
    from flwr.simulation import run_simulation

    config = backend_config(scenario, verbose)
    config["init_args"]["address"] = address or os.environ.get("RAY_ADDRESS") or "local"  # see start_ray
    import ray

    started = not ray.is_initialized()
    try:
        run_simulation(server_app=server_app, client_app=client_app, num_supernodes=scenario.partition.num_clients,
                       backend_config=config, verbose_logging=verbose)
    finally:
        if started:
            shutdown_ray()


def run_actor_engine(scenario: Scenario, server_app, recipe: tuple, verbose: bool, address: str | None,
                     progress: TextIO | None) -> None:
    """flowerbed's engine: Ray started (or attached to), the actors started, the data
    and partition shared with them while they import, then the ServerApp over
    :class:`~flowerbed.server.engine.ActorGrid` in this thread."""
    import ray
    from flwr.app import Context, RecordDict
    from flwr.common.constant import SUPERLINK_NODE_ID
    from flwr.supercore.task_identity import TaskIdentity

    from flowerbed.client.app import build_client_app
    from flowerbed.server.engine import ActorGrid, ActorPool
    from flowerbed.sims.datasets import load_dataset
    from flowerbed.sims.partitions import scenario_partition

    phases = Phases(progress)
    how = start_ray(address, verbose)
    try:
        resources = ray.cluster_resources()
        size = pool_size(scenario, ray.nodes())  # before any actor starts
        phases.done(f"Ray {how}: {len(ray.nodes())} node(s), {resources.get('CPU', 0):g} CPUs, "
                    f"{resources.get('GPU', 0):g} GPUs")
        actors_start = time.perf_counter()
        pool = ActorPool(size, client_resources(scenario), build_client_app, recipe)
        try:
            data = load_dataset(scenario.dataset)
            phases.done(f"data: {scenario.dataset.name}", at_least=0.05)
            partition = scenario_partition(scenario)
            phases.done(f"partition: {scenario.partition.kind}, {scenario.partition.num_clients} clients",
                        at_least=0.05)
            pool.share(scenario, ray.put((data, partition)))
            threading.Thread(target=_report_ready, args=(pool, phases, actors_start, size), daemon=True).start()
            run_id = secrets.randbits(63)
            TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, run_id, SUPERLINK_NODE_ID
            grid = ActorGrid(pool, scenario.partition.num_clients, run_id,
                             num_examples=[len(client.train) for client in partition.clients])
            server_app(grid, Context(run_id=run_id, node_id=0, node_config={}, state=RecordDict(), run_config={}))
        finally:
            pool.shutdown()
    finally:
        if how != "in use":
            shutdown_ray()  # a cluster attached to is left running: only this driver leaves


def _report_ready(pool, phases: Phases, since: float, size: int) -> None:
    try:
        pool.ready()
    except Exception:  # noqa: BLE001 - a failed actor shows as failed clients
        return
    phases.done(f"{size} client actor(s) ready", since=since)


def start_ray(address: str | None, verbose: bool) -> str:
    """Start a local Ray ("started"), or attach to ``address`` or ``$RAY_ADDRESS``
    ("attached at ..."); a Ray this process already runs is used as it is ("in use",
    and left running).

    Started here, Ray's workers inherit this process's environment, with ``sys.path``
    as ``PYTHONPATH`` (modules a user registered halves from import there too): no
    per-actor runtime environment, so no set-up process per actor."""
    import ray

    if ray.is_initialized():
        return "in use"
    args = ray_init_args(verbose)
    if address or os.environ.get("RAY_ADDRESS"):
        ray.init(address=address, **args)
        return f"attached at {ray.get_runtime_context().gcs_address}"
    paths = [p for p in sys.path if p]
    if os.environ.get("PYTHONPATH"):
        paths.append(os.environ["PYTHONPATH"])
    previous = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(paths)
    try:
        # "local": a new Ray of this run's own, even where a `ray start` cluster runs
        # (a bare ray.init() would join that, or fail on one that has stopped).
        ray.init(address="local", **args)
    finally:
        if previous is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = previous
    return "started"


def shutdown_ray() -> None:
    """Stop this process's Ray (its actors included), so that no worker outlives the run."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
