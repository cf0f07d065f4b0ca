"""What a node knows of its work: the scenario (the simulator's, or the run config's),
its partition (from the node config) and that partition's data, as a :class:`Job`."""

from __future__ import annotations

import functools
import logging

import torch
from flwr.app import ConfigRecord, Context, Message

from flowerbed.client.mods import Job
from flowerbed.sims.config import ConfigError, Scenario
from flowerbed.sims.run_config import read_run_config
from flowerbed.sims.task import client_data, initial_state, reusable_model


LOG = logging.getLogger("flowerbed")


@functools.lru_cache(maxsize=8)
def _scenario_from(items: frozenset, num_partitions: int | None) -> Scenario:
    read = read_run_config(dict(items))
    for note in read.notes():  # once per run config (cached)
        LOG.warning("%s", note)
    scenario = read.scenario
    if not read.flowerbed and num_partitions:  # a stock app's run: the federation is the node config's
        partition = scenario.partition.model_copy(update={"num_clients": num_partitions})
        sampling = scenario.sampling.model_copy(
            update={"min_clients": min(scenario.sampling.min_clients, num_partitions)})
        scenario = scenario.model_copy(update={"partition": partition, "sampling": sampling})
    return scenario


def resolve_scenario(context: Context, given: Scenario | None) -> Scenario:
    """The simulator's scenario, else the run config's; a node's ``data-root`` wins."""
    if given is None:
        num_partitions = context.node_config.get("num-partitions")
        given = _scenario_from(frozenset(context.run_config.items()),
                               int(num_partitions) if num_partitions is not None else None)
    root = context.node_config.get("data-root")
    if root:
        given = given.model_copy(update={"dataset": given.dataset.model_copy(update={"root": str(root)})})
    return given


def partition_of(context: Context, scenario: Scenario) -> int:
    partition_id = int(context.node_config["partition-id"])
    num_partitions = int(context.node_config.get("num-partitions", scenario.partition.num_clients))
    if num_partitions != scenario.partition.num_clients:
        raise ConfigError(f"node config num-partitions={num_partitions} differs from "
                          f"partition.num_clients={scenario.partition.num_clients}")
    if not 0 <= partition_id < num_partitions:
        raise ConfigError(f"node config partition-id={partition_id} is outside 0..{num_partitions - 1}")
    return partition_id


@functools.cache
def _limit_threads(num_cpus: float) -> None:
    # One process per client slot: intra-op threads beyond its CPU share only contend.
    torch.set_num_threads(max(1, int(num_cpus)))


#: The message config keys a flowerbed client obeys (what Flower's quickstart ServerApp
#: sends), and the scenario key each sets for that message.
OBEYED_CONFIG = {"lr": "lr"}


def obey_server(scenario: Scenario, config: ConfigRecord) -> Scenario:
    """``scenario`` with the message's ``lr`` (if any) as ``client.lr``: the server's
    learning rate wins over the run config's (flowerbed's server sends the scenario's)."""
    update = {key: float(config[name]) for name, key in OBEYED_CONFIG.items()
              if isinstance(config.get(name), (int, float)) and float(config[name]) != getattr(scenario.client, key)}
    if not update:
        return scenario
    return scenario.model_copy(update={"client": scenario.client.model_copy(update=update)})


def job_of(message: Message, context: Context, given: Scenario | None) -> Job:
    """The job of a message: the scenario, the partition and its data, the config."""
    scenario = resolve_scenario(context, given)
    _limit_threads(scenario.client.num_cpus)
    partition_id = partition_of(context, scenario)
    config = message.content.config_records.get("config", ConfigRecord())
    scenario = obey_server(scenario, config)
    return Job(scenario, partition_id, context, config, client_data(scenario, partition_id),
               server_round=int(config.get("server-round", 0)))


def load_received(job: Job, message: Message) -> None:
    """The per-process model, holding the scenario's initial weights overwritten by the
    server's (parameters the server does not send start from the initial weights; what
    it sends for other networks stays in ``job.received`` for the mods that use it)."""
    job.received = message.content["arrays"].to_torch_state_dict()
    job.model = reusable_model(job.scenario)
    initial = initial_state(job.scenario)
    job.model.load_state_dict({**initial, **{k: v for k, v in job.received.items() if k in initial}})
