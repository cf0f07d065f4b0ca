"""The ClientApp: local training and personalized evaluation on one partition.

The same app runs in simulation (a Ray actor serving many virtual SuperNodes) and in
deployment (a SuperNode over gRPC). It learns the scenario from the run config
(``context.run_config``, the flattened scenario) unless the simulator hands it one,
and its partition from the node config (``partition-id``, ``num-partitions``).

Messages:

* ``query``: reply ``partition-id`` and ``num-examples`` (the server's roster);
* ``train``: load ``arrays``, train locally, reply ``arrays`` and ``train_loss``;
* ``evaluate``: load ``arrays``, score them on the client's own label-matched test
  split, reply ``accuracy`` and ``loss`` (the personalized accuracy);
* ``query.ggeur_stats`` / ``query.ggeur_geometry``: GGEUR's setup phase (reply the
  class statistics; build the augmented set from the geometry and keep it in the
  state, where ``train`` finds it when the config says ``ggeur-data``).
"""

from __future__ import annotations

import dataclasses
import functools

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from flowerbed.client import fedloge, fedpub, ggeur
from flowerbed.client.personal import (compose_state, name_patterns, restore_optimizer, shared_state,
                                       store_local, store_optimizer)
from flowerbed.client.task import (ClientData, GraphData, client_data, client_device, initial_state,
                                   load_num_classes, reusable_model, round_seed)
from flowerbed.client.trainer import (TrainSettings, finetune, fit, group_accuracies, make_optimizer, matches,
                                      predict, score)
from flowerbed.sims.config import ConfigError, Scenario
from flowerbed.sims.partitions import scenario_partition

#: Key of the per-client state record in ``Context.state``.
STATE_KEY = "flowerbed"


@functools.lru_cache(maxsize=8)
def _scenario_from(items: frozenset) -> Scenario:
    return Scenario.from_run_config(dict(items))


def resolve_scenario(context: Context, given: Scenario | None) -> Scenario:
    """The simulator's scenario, else the run config's; a node's ``data-root`` wins."""
    if given is None:
        given = _scenario_from(frozenset(context.run_config.items()))
    root = context.node_config.get("data-root")
    if root:
        given = given.model_copy(update={"dataset": given.dataset.model_copy(update={"root": str(root)})})
    return given


def partition_of(context: Context, scenario: Scenario) -> int:
    partition_id = int(context.node_config["partition-id"])
    num_partitions = int(context.node_config.get("num-partitions", scenario.partition.num_clients))
    if num_partitions != scenario.partition.num_clients:
        raise ConfigError(
            f"node config num-partitions={num_partitions} differs from "
            f"partition.num_clients={scenario.partition.num_clients}"
        )
    if not 0 <= partition_id < num_partitions:
        raise ConfigError(f"node config partition-id={partition_id} is outside 0..{num_partitions - 1}")
    return partition_id


@functools.cache
def _limit_threads(num_cpus: float) -> None:
    # One process per client slot: intra-op threads beyond its CPU share only contend.
    torch.set_num_threads(max(1, int(num_cpus)))


def client_state(context: Context) -> ConfigRecord:
    """This client's own record in ``Context.state``; it persists across rounds."""
    if STATE_KEY not in context.state.config_records:
        context.state[STATE_KEY] = ConfigRecord({"rounds": 0, "first-round": 0})
    return context.state.config_records[STATE_KEY]


def _setup(message: Message, context: Context, given: Scenario | None) -> tuple[Scenario, int, ClientData | GraphData]:
    scenario = resolve_scenario(context, given)
    _limit_threads(scenario.client.num_cpus)
    partition_id = partition_of(context, scenario)
    return scenario, partition_id, client_data(scenario, partition_id)


def _load(scenario: Scenario, context: Context, received: dict, local: tuple[str, ...]) -> torch.nn.Module:
    """The per-process model holding this client's weights: initial, then the server's,
    then the client's own local parameters (masks, a head) from its state."""
    model = reusable_model(scenario)
    model.load_state_dict(compose_state(initial_state(scenario), received, context, local))
    return model


def _after_training(model: torch.nn.Module, data: ClientData | GraphData, config: ConfigRecord) -> dict:
    """Metrics of the locally trained model: graphs report validation and test accuracy
    on the client's own nodes (FED-PUB's protocol); FED-PUB adds its embedding."""
    out: dict = {}
    if isinstance(data, GraphData):
        _, out["val_accuracy"] = score(model, data, "val")
        _, out["test_accuracy"] = score(model, data, "test")
        out["num-val"], out["num-test"] = int(data.val.sum()), data.num_test
    if "proxy-seed" in config:
        out["embedding"] = fedpub.functional_embedding(model, int(config["proxy-seed"]), int(data.x.shape[1]))
    if any("mask" in name for name, _ in model.named_parameters()):
        out["mask_sparsity"] = fedpub.mask_sparsity(model, float(config.get("prune", 1e-3)))
    return out


def _train(model: torch.nn.Module, data: ClientData | GraphData, settings: TrainSettings, config: ConfigRecord,
           context: Context, received: dict, server_round: int, generator: torch.Generator,
           keep_optimizer: bool) -> float:
    """Local training with what the config asks for: frozen parameters (FedBABU), kept
    optimizer state, FED-PUB's regularisers."""
    frozen = name_patterns(config, "freeze-keys")
    trainable = [p for n, p in model.named_parameters() if not matches(n, frozen)]
    optimizer = make_optimizer(trainable, settings)
    keep_optimizer = keep_optimizer or bool(config.get("keep-optimizer", False))
    if keep_optimizer:
        restore_optimizer(optimizer, context)
    extra = None
    if "mask-l1" in config or "prox-l2" in config:  # FED-PUB's regularisers
        extra = fedpub.penalty(model, received, float(config.get("mask-l1", 0.0)),
                               float(config.get("prox-l2", 0.0)), str(config.get("regularizers", "paper")),
                               with_proximal=server_round > 1)
    loss = fit(model, data, settings, generator, optimizer, extra)
    if keep_optimizer:
        store_optimizer(optimizer, context)
    return loss


def _training_data(data: ClientData | GraphData, config: ConfigRecord, context: Context) -> ClientData | GraphData:
    """The client's labelled rows, or its GGEUR-augmented set when the config asks."""
    if not config.get("ggeur-data", False):
        return data
    if ggeur.DATA_KEY not in context.state.array_records:
        raise RuntimeError("train config asks for ggeur-data but this client has no augmented set "
                           "(the GGEUR setup phase did not reach it)")
    stored = context.state.array_records[ggeur.DATA_KEY].to_torch_state_dict()
    device = data.x_train.device
    return dataclasses.replace(data, x_train=stored["x"].to(device), y_train=stored["y"].to(device))


def _unit_weight(config: ConfigRecord) -> dict[str, int]:
    """A weight of 1 per reply, for strategies told to average without sample weights."""
    return {"unit-weight": 1} if config.get("unit-weight", False) else {}


def _phi_seed(scenario: Scenario, partition_id: int) -> int:
    return round_seed(scenario, 0, partition_id)


def _accuracy(pred: torch.Tensor, y: torch.Tensor) -> float:
    return float((pred == y).float().mean()) if len(y) else 0.0


def _groups(prefix: str, pred: torch.Tensor, data: ClientData, groups: dict[str, list[int]]) -> dict[str, float]:
    """Accuracy per class group, NaN for a group without a local test sample: every
    client replies the same keys (Flower's aggregation requires it), and the server
    averages each group over the clients that have it."""
    found = group_accuracies(pred, data.y_test, groups)
    return {f"{prefix}_{g}": found.get(g, float("nan")) for g in groups}


def build_client_app(scenario: Scenario | None = None) -> ClientApp:
    """A ClientApp bound to ``scenario``, or reading it from the run config if None."""
    app = ClientApp()

    @app.query()
    def query(message: Message, context: Context) -> Message:
        _, partition_id, data = _setup(message, context, scenario)
        metrics = MetricRecord({"partition-id": partition_id, "num-examples": data.num_train})
        return Message(RecordDict({"metrics": metrics}), reply_to=message)

    @app.query("ggeur_stats")
    def ggeur_stats(message: Message, context: Context) -> Message:
        resolved, partition_id, data = _setup(message, context, scenario)
        config = message.content["config"]
        x = data.x_train.detach().cpu().reshape(data.num_train, -1).numpy()
        stats = ggeur.class_statistics(x, data.y_train.cpu().numpy())
        arrays = ggeur.upload_arrays(stats, str(config["upload"]), int(config["upload-eigenpairs"]))
        info = ConfigRecord({"num-classes": int(load_num_classes(resolved))})
        domain = scenario_partition(resolved).clients[partition_id].domain
        if domain:  # no empty string: Flower 1.39's count_bytes rejects it
            info["domain"] = domain
        return Message(RecordDict({ggeur.STATS_KEY: ggeur.array_record(arrays), "info": info}), reply_to=message)

    @app.query("ggeur_geometry")
    def ggeur_geometry(message: Message, context: Context) -> Message:
        resolved, partition_id, data = _setup(message, context, scenario)
        config = message.content["config"]
        arrays = {k: v.numpy() for k, v in message.content[ggeur.GEOMETRY_KEY].items()}
        x, y = ggeur.augmented_set(data.x_train, data.y_train, arrays, config,
                                   round_seed(resolved, 0, partition_id) + 2)
        context.state[ggeur.DATA_KEY] = ArrayRecord({"x": x, "y": y})
        metrics = MetricRecord({"partition-id": partition_id, "num-examples": len(y),
                                "num-generated": len(y) - data.num_train})
        return Message(RecordDict({"metrics": metrics}), reply_to=message)

    @app.train()
    def train(message: Message, context: Context) -> Message:
        resolved, partition_id, data = _setup(message, context, scenario)
        config = message.content["config"]
        server_round = int(config["server-round"])
        local = name_patterns(config)
        received = message.content["arrays"].to_torch_state_dict()
        model = _load(resolved, context, received, local)

        data = _training_data(data, config, context)
        settings = TrainSettings.from_scenario(resolved.client, float(config.get("proximal-mu", 0.0)),
                                               bool(config.get("double-softmax", False)))
        seed = round_seed(resolved, server_round, partition_id)
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        if config.get("fedloge", False):  # three heads, SSE-C trains the backbone
            loss = fedloge.local_update(model, data, settings, config, context, generator,
                                        _phi_seed(resolved, partition_id))
        else:
            loss = _train(model, data, settings, config, context, received, server_round, generator,
                          resolved.client.keep_optimizer)
        store_local(model, context, local)

        state = client_state(context)
        state["rounds"] = int(state["rounds"]) + 1
        if int(state["first-round"]) == 0:
            state["first-round"] = server_round
        metrics = MetricRecord({
            "num-examples": data.num_train,
            "train_loss": loss,
            "partition-id": partition_id,
            "state-rounds": int(state["rounds"]),
            "state-first-round": int(state["first-round"]),
            "on-gpu": int(client_device(resolved).type == "cuda"),
            **_after_training(model, data, config),
            **_unit_weight(config),
        })
        # "share-local": the client keeps its own model yet uploads it (GGEUR's code loop).
        arrays = ArrayRecord(shared_state(model, () if config.get("share-local", False) else local))
        return Message(RecordDict({"arrays": arrays, "metrics": metrics}), reply_to=message)

    @app.evaluate()
    def evaluate_local(message: Message, context: Context) -> Message:
        resolved, partition_id, data = _setup(message, context, scenario)
        config = message.content["config"]
        received = message.content["arrays"].to_torch_state_dict()
        model = _load(resolved, context, received, name_patterns(config))
        groups = scenario_partition(resolved).class_groups
        extra: dict = {}
        if config.get("fedloge", False):  # psi + phi_k, plain and realigned by GLA-FR
            phi_seed = _phi_seed(resolved, partition_id)
            logits = fedloge.personal_logits(model, data, config, context, phi_seed, realigned=False)
            plain = logits.argmax(dim=1)
            realigned = fedloge.personal_logits(model, data, config, context, phi_seed, realigned=True).argmax(dim=1)
            loss = float(torch.nn.functional.cross_entropy(logits, data.y_test)) if data.num_test else 0.0
            accuracy = _accuracy(plain, data.y_test)
            extra["personalized_accuracy_glafr"] = _accuracy(realigned, data.y_test)
            extra.update(_groups("personalized_accuracy", plain, data, groups))
            extra.update(_groups("personalized_accuracy_glafr", realigned, data, groups))
        else:
            if "finetune-keys" in config:  # FedBABU: the head is fine-tuned on local data first
                settings = TrainSettings.from_scenario(resolved.client)
                seed = round_seed(resolved, int(config.get("server-round", 0)), partition_id) + 1
                model = finetune(model, data, settings, name_patterns(config, "finetune-keys"),
                                 int(config.get("finetune-epochs", 0)), torch.Generator().manual_seed(seed))
            loss, accuracy = score(model, data)
            if groups and isinstance(data, ClientData):
                extra.update(_groups("personalized_accuracy", predict(model, data.x_test), data, groups))
        metrics = MetricRecord({
            "num-examples": data.num_test,
            "loss": loss,
            "accuracy": accuracy,
            "partition-id": partition_id,
            **extra,
            **_unit_weight(config),
        })
        return Message(RecordDict({"metrics": metrics}), reply_to=message)

    return app


#: The app `flwr run` and SuperNodes load (scenario from the run config).
app = build_client_app()
