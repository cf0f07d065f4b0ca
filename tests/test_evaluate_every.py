"""``sampling.evaluate_every``: evaluation on a schedule, training untouched."""

from __future__ import annotations

from pathlib import Path

from conftest import requires_shared_data
from inprocess import run_in_process

from flowerbed.sims.config import load_scenario

QUICKSTART = Path(__file__).resolve().parents[1] / "sims" / "quickstart.toml"


def _run(tmp_path, every: int):
    return run_in_process(load_scenario(QUICKSTART, [
        "rounds=5", f"sampling.evaluate_every={every}",
        f"mlflow.tracking_uri='sqlite:///{tmp_path / f'every{every}.db'}'"]))


@requires_shared_data
def test_evaluation_runs_on_the_schedule_and_leaves_training_as_it_was(tmp_path):
    (every2, grid), (every1, _) = _run(tmp_path, 2), _run(tmp_path, 1)
    rounds_with = lambda history, key: sorted(r for r, m in history.items() if key in m)  # noqa: E731
    # Before round 1, every second round and the last; training metrics every round.
    assert rounds_with(every2.history, "global_accuracy") == [0, 2, 4, 5]
    assert rounds_with(every2.history, "personalized_accuracy") == [2, 4, 5]
    assert rounds_with(every2.history, "train_loss") == [1, 2, 3, 4, 5]
    # No evaluate message at all on the other rounds: 3 evaluated rounds x 10 clients.
    assert sum(m.metadata.message_type == "evaluate" for m in grid.delivered) == 3 * 10
    # Every client trains every round here, so skipping evaluation changes no training.
    for r in (2, 4, 5):
        for key in ("train_loss", "global_accuracy", "personalized_accuracy"):
            assert every2.history[r][key] == every1.history[r][key]
