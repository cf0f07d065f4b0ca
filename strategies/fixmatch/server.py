"""FixMatch's server half: Flower's FedAvg (every parameter averaged, weighted by the
clients' labelled samples) that pools the clients' pseudo-label counts of the round
into rates (FedLabel's server is the same, under its own name)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from flwr.app import ArrayRecord, Message, MetricRecord

from flowerbed.strategies.common import ParamsFedAvg

#: logged rate -> (numerator, denominator) of the pooled counts.
RATES = {
    "pseudo_label_rate": ("pseudo-masked", "pseudo-seen"),
    "pseudo_label_accuracy": ("pseudo-correct", "pseudo-masked"),
    "local_win_rate": ("pseudo-local-wins", "pseudo-seen"),
    "local_teacher_accuracy": ("pseudo-local-correct", "pseudo-seen"),
    "global_teacher_accuracy": ("pseudo-global-correct", "pseudo-seen"),
    "teacher_agreement": ("pseudo-agree", "pseudo-seen"),
}


def pooled_rates(replies: list[dict[str, Any]]) -> dict[str, float]:
    """Each rate over all the round's unlabelled samples (sums of counts, not a mean of
    per-client ratios); a rate whose counts no client sent, or whose denominator is 0, is left out."""
    totals: dict[str, float] = {}
    for metrics in replies:
        for key, value in metrics.items():
            if key.startswith("pseudo-"):
                totals[key] = totals.get(key, 0) + float(value)
    return {name: totals[num] / totals[den] for name, (num, den) in RATES.items()
            if num in totals and totals.get(den)}


class FixMatch(ParamsFedAvg):
    name = "fixmatch"

    def aggregate_train(self, server_round: int,
                        replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        self.rates = pooled_rates([dict(r.content["metrics"]) for r in replies if not r.has_error()])
        return super().aggregate_train(server_round, replies)

    def round_report(self) -> tuple[dict[str, float], dict[str, Any]]:
        return getattr(self, "rates", {}), {}
