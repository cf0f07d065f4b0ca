"""The failure policy around a strategy's rounds: a round in which too few clients
returned a usable update is not applied (the global model stays as it was), and too
many such rounds in a row end the run.

Wraps the strategy's ``aggregate_train`` on the instance (as
:func:`~flowerbed.server.app.evaluate_on_schedule` wraps ``configure_evaluate``), so it
holds for Flower's strategies, flowerbed's and their wrappers alike; a skipped round
never reaches the strategy's own aggregation, so its state (per-client models, say)
does not move either.
"""

from __future__ import annotations

from flowerbed.server.grid import RosterGrid
from flowerbed.sims.config import Scenario


class SkippedRounds:
    """Counts the rounds not applied (``skipped``: this round's, reset by the hook)."""

    def __init__(self) -> None:
        self.skipped = False
        self.in_a_row = 0

    def take(self, also: bool = False) -> bool:
        """Whether the round just ended was skipped (or ``also``), and forget it."""
        skipped, self.skipped = self.skipped or also, False
        self.in_a_row = self.in_a_row + 1 if skipped else 0
        return skipped


def skip_thin_rounds(strategy, scenario: Scenario, grid: RosterGrid) -> SkippedRounds:
    """A round whose usable train replies are fewer than ``sampling.min_success_fraction``
    of the messages sent (a reply lost to the round timeout counts against it) is not
    aggregated."""
    need = scenario.sampling.min_success_fraction
    tally = SkippedRounds()
    aggregate = strategy.aggregate_train

    def aggregate_train(server_round, replies):
        replies = list(replies)
        usable = sum(not reply.has_error() for reply in replies)
        sent = max(len(replies), grid.last_sent)
        if sent and usable < need * sent:
            tally.skipped = True
            return None, None
        return aggregate(server_round, replies)

    strategy.aggregate_train = aggregate_train
    return tally
