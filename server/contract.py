"""What flowerbed's ServerApp asks of a ClientApp, and what it tolerates: the client
contract of ``deploy/CLIENTS.md`` (its version is :data:`CONTRACT_VERSION`).

A client written like Flower's own examples answers ``train`` and ``evaluate`` with
``arrays`` and a MetricRecord holding ``num-examples``; flowerbed reads the metric
names those examples use as its own (:data:`METRIC_ALIASES`) and, when it aggregates
the replies' metrics the way Flower's strategies do (an average weighted by
``num-examples``), leaves out the keys that are not measurements: by Flower's own
naming (``num-examples``, ``partition-id``), a key with a hyphen is a count or an
identifier, and its mean means nothing.
"""

from __future__ import annotations

from flwr.app import MetricRecord, RecordDict
from flwr.serverapp.strategy.strategy_utils import aggregate_metricrecords

#: Bumped when a change would break a client that met the previous version.
CONTRACT_VERSION = 1

#: Metric names of Flower's examples -> flowerbed's, per message type (deploy/CLIENTS.md).
METRIC_ALIASES = {
    "train": {"loss": "train_loss", "train-loss": "train_loss"},
    "evaluate": {"eval_acc": "accuracy", "eval_accuracy": "accuracy", "acc": "accuracy",
                 "eval_loss": "loss", "test_acc": "accuracy", "test_accuracy": "accuracy", "test_loss": "loss"},
}


def with_flowerbed_names(metrics: dict[str, float], kind: str) -> dict[str, float]:
    """A reply's metrics with Flower's common names read as flowerbed's (a name the
    reply already carries wins)."""
    aliases = METRIC_ALIASES.get(kind, {})
    renamed = {aliases[k]: v for k, v in metrics.items() if k in aliases and aliases[k] not in metrics}
    return {**metrics, **renamed}


def averaged(key: str) -> bool:
    """Whether a reply metric is a measurement to average (not a count or an id)."""
    return "-" not in key


def average_measurements(records: list[RecordDict], weight_key: str) -> MetricRecord:
    """Flower's ``aggregate_metricrecords`` (the mean weighted by ``weight_key``) over
    the measurements only: what a strategy logs as its aggregated client metrics."""
    weights = [float(next(iter(r.metric_records.values()))[weight_key]) for r in records]
    total = sum(weights)
    out: dict[str, float | list[float]] = {}
    for record, weight in zip(records, weights):
        share = weight / total if total else 1.0 / len(records)
        for metrics in record.metric_records.values():
            for key, value in metrics.items():
                if not averaged(key):
                    continue
                if isinstance(value, list):
                    scaled = [v * share for v in value]
                    out[key] = [a + b for a, b in zip(out[key], scaled)] if key in out else scaled
                else:
                    out[key] = out.get(key, 0.0) + value * share
    return MetricRecord(out)


def install_measurement_averaging(strategy) -> None:
    """Make ``strategy`` (and every strategy it wraps, ``.inner``) aggregate reply
    metrics with :func:`average_measurements`, unless it was given its own function."""
    while strategy is not None:
        for attribute in ("train_metrics_aggr_fn", "evaluate_metrics_aggr_fn"):
            if getattr(strategy, attribute, None) is aggregate_metricrecords:  # Flower's default
                setattr(strategy, attribute, average_measurements)
        strategy = getattr(strategy, "inner", None)
