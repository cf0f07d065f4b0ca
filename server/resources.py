"""What a simulation's clients ask for against what the machine (or Ray cluster) has.

A client asking for more CPUs or GPUs than any node has would wait for them forever
(Ray queues the actor; Flower's engine hangs with its MLflow run RUNNING). Checked
twice: against this machine before Ray starts (:func:`check_before_ray`, which also
refuses a cluster address nothing answers on), and against the cluster's nodes once
attached, before any actor starts (:func:`pool_size`).
"""

from __future__ import annotations

import math
import os

from flowerbed.sims.config import ConfigError, Scenario


def usable_cpus() -> int:
    """The CPUs this process may run on (its CPU affinity, e.g. a container's cpuset)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def cluster_address(scenario: Scenario) -> str | None:
    """The Ray cluster the run attaches to (whose nodes, not this machine, host the
    clients): ``simulation.ray_address``, else ``$RAY_ADDRESS``; None: a local Ray."""
    return (scenario.simulation and scenario.simulation.ray_address) or os.environ.get("RAY_ADDRESS") or None


def check_before_ray(scenario: Scenario) -> None:
    """What can be refused before Ray starts: a local run's resources against this
    machine (:func:`check_machine`); a cluster's address that nothing answers on (Ray
    would retry it for minutes). A cluster's nodes are checked once attached
    (:func:`pool_size`)."""
    address = cluster_address(scenario)
    if address is None:
        check_machine(scenario)
    else:
        check_reachable(address)


def check_reachable(address: str) -> None:
    """A ``HOST:PORT`` (or ``ray://HOST:PORT``) address must accept a connection;
    "auto" and "local" are Ray's to resolve."""
    import socket

    host, sep, port = address.split("://")[-1].rpartition(":")
    if not sep or not port.isdigit():
        if address in ("auto", "local"):
            return
        raise ConfigError(f"simulation.ray_address: {address!r}: expected HOST:PORT (what `ray start --head` "
                          "prints), ray://HOST:PORT or 'auto'")
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
    except OSError as err:
        raise ConfigError(f"simulation.ray_address: nothing answers at {host}:{port} ({err.strerror or err}); "
                          "start the cluster's head with `ray start --head`") from None


def check_machine(scenario: Scenario) -> None:
    """Refuse ``client.num_cpus`` / ``client.num_gpus`` this machine cannot give one client."""
    import torch

    cpus = usable_cpus()
    if scenario.client.num_cpus > cpus:
        raise ConfigError(f"client.num_cpus: {scenario.client.num_cpus} but this machine has {cpus} CPUs")
    gpus_needed = math.ceil(scenario.client.num_gpus)
    if gpus_needed > 0:
        if not torch.cuda.is_available():
            raise ConfigError(f"client.num_gpus: {scenario.client.num_gpus} but torch {torch.__version__} sees no GPU "
                              "here (a CPU build, or no device); set client.num_gpus = 0")
        if gpus_needed > torch.cuda.device_count():
            raise ConfigError(f"client.num_gpus: {scenario.client.num_gpus} but this machine has "
                              f"{torch.cuda.device_count()} GPU(s)")


def client_resources(scenario: Scenario) -> dict[str, float]:
    return {"num_cpus": scenario.client.num_cpus, "num_gpus": scenario.client.num_gpus}


def pool_size(scenario: Scenario, nodes: list[dict]) -> int:
    """How many client actors fit on the Ray nodes (``ray.nodes()``), one client each
    at a time, never more than there are clients; 0 fitting is a ConfigError."""
    cpus, gpus = scenario.client.num_cpus, scenario.client.num_gpus
    live = [node.get("Resources") or {} for node in nodes if node.get("Alive", True)]
    fit = 0
    for have in live:
        here = int(have.get("CPU", 0) // cpus) if cpus > 0 else 1 << 30
        if gpus > 0:
            here = min(here, int(have.get("GPU", 0) // gpus))
        fit += here
    if fit == 0:
        most_gpus = max((have.get("GPU", 0) for have in live), default=0)
        most_cpus = max((have.get("CPU", 0) for have in live), default=0)
        key = "client.num_gpus" if gpus > most_gpus else "client.num_cpus"
        raise ConfigError(f"{key}: no Ray node can host one client with {cpus:g} CPU(s) and {gpus:g} GPU(s) "
                          f"(the most any live node has: {most_cpus:g} CPUs, {most_gpus:g} GPUs)")
    return min(fit, scenario.partition.num_clients)
