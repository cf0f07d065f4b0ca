"""GGEUR's client half: two setup queries (upload the class statistics; build the
augmented set from the returned geometry and keep it in ``Context.state``), then
every round trains on that set. The code loop also keeps a private model, uploads it
all the same, and feeds softmax outputs to the cross-entropy."""

from __future__ import annotations

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict

from flowerbed.client.mods import Job, Mod, keep_local, report, settings, train_on_stored
from flowerbed.sims.partitions import scenario_partition
from flowerbed.sims.task import load_num_classes
from flowerbed.strategies.contract import ClientHalf, QueryHandler
from flowerbed.strategies.ggeur.generation import augmented_set
from flowerbed.strategies.ggeur.params import GGEURParams
from flowerbed.strategies.ggeur.server import NAME, UNIT_WEIGHT
from flowerbed.strategies.ggeur.stats import GEOMETRY_KEY, STATS_KEY, array_record, class_statistics, upload_arrays

#: Where a client keeps its augmented training set in ``Context.state``.
DATA_KEY = "ggeur-data"


def upload_statistics(message: Message, context: Context, job: Job) -> RecordDict:
    """``query.ggeur_stats``: this client's per-class counts, means and covariances."""
    params = GGEURParams.from_config(message.content["config"], NAME)
    data = job.data
    x = data.x_train.detach().cpu().reshape(data.num_train, -1).numpy()
    stats = class_statistics(x, data.y_train.cpu().numpy())
    arrays = upload_arrays(stats, params.upload, params.upload_eigenpairs)
    info = ConfigRecord({"num-classes": int(load_num_classes(job.scenario))})
    domain = scenario_partition(job.scenario).clients[job.partition_id].domain
    if domain:  # no empty string: Flower 1.39's count_bytes rejects it
        info["domain"] = domain
    return RecordDict({STATS_KEY: array_record(arrays), "info": info})


def build_augmented_set(message: Message, context: Context, job: Job) -> RecordDict:
    """``query.ggeur_geometry``: generate D~_k once and keep it in the client's state."""
    params = GGEURParams.from_config(message.content["config"], NAME)
    arrays = {k: v.numpy() for k, v in message.content[GEOMETRY_KEY].items()}
    data = job.data
    x, y = augmented_set(data.x_train, data.y_train, arrays, params, load_num_classes(job.scenario), job.seed(0) + 2)
    context.state[DATA_KEY] = ArrayRecord({"x": x, "y": y})
    return RecordDict({"metrics": MetricRecord({"partition-id": job.partition_id, "num-examples": len(y),
                                                "num-generated": len(y) - data.num_train})})


def _unit_weight(job: Job) -> dict[str, int]:
    return {UNIT_WEIGHT: 1}


class GGEURClient(ClientHalf):
    name = NAME
    params_type = GGEURParams

    def queries(self) -> dict[str, QueryHandler]:
        return {"ggeur_stats": upload_statistics, "ggeur_geometry": build_augmented_set}

    def train_mods(self, params: GGEURParams, job: Job) -> list[Mod]:
        mods = [train_on_stored(DATA_KEY, "GGEUR-augmented set (the GGEUR setup phase did not reach it)")]
        if params.loop == "code":  # private models, uploaded all the same; CE on softmax outputs
            mods += [keep_local(("*",), upload=True), settings(double_softmax=True), report(_unit_weight)]
        return mods

    def evaluate_mods(self, params: GGEURParams, job: Job) -> list[Mod]:
        if params.loop == "code":
            return [keep_local(("*",), store=False), report(_unit_weight)]
        return []
