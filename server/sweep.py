"""A grid of runs on one scenario file: strategies (or any variants) x seeds.

Every cell is validated before the first run starts. The runs go one after another,
each its own MLflow run tagged with the sweep's name; a cell whose resolved config
already has a FINISHED run in the experiment (same ``config_hash`` tag) is skipped, so
a sweep that was stopped continues where it stopped, and a results script can add
methods or seeds to a finished grid without rerunning it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from mlflow.tracking import MlflowClient

from flowerbed.server.tracking import CONFIG_HASH_TAG, config_hash, tracking_client
from flowerbed.sims.config import Scenario, load_scenario
from flowerbed.strategies import resolve_strategy

SWEEP_TAG = "sweep"


@dataclass(frozen=True)
class Variant:
    """One row of the grid: a label, the ``--set`` overrides that make it, extra tags."""

    label: str
    overrides: tuple[str, ...] = ()
    tags: dict[str, str] = field(default_factory=dict)

    @classmethod
    def strategy(cls, method: str) -> "Variant":
        """``NAME`` or ``NAME+ADDON``: the scenario with that strategy (and add-ons)."""
        return cls(method, (f"strategy.name={method!r}",))


@dataclass(frozen=True)
class Cell:
    variant: Variant
    seed: int
    scenario: Scenario


def plan(path: str | Path, variants: Sequence[Variant], seeds: Sequence[int],
         overrides: Sequence[str] = ()) -> list[Cell]:
    """Every cell of the grid, validated (scenario and strategy): a bad one fails here,
    before any run, with its one-line ConfigError."""
    cells = []
    for variant in variants:
        for seed in seeds:
            scenario = load_scenario(path, [*overrides, *variant.overrides, f"seed={seed}"])
            resolve_strategy(scenario)
            cells.append(Cell(variant, seed, scenario))
    return cells


def finished_run(client: MlflowClient, scenario: Scenario) -> str | None:
    """The id of a FINISHED run of exactly this resolved config in its experiment, if any."""
    experiment = client.get_experiment_by_name(scenario.mlflow.experiment)
    if experiment is None:
        return None
    runs = client.search_runs([experiment.experiment_id], max_results=1,
                              filter_string=f"tags.{CONFIG_HASH_TAG} = '{config_hash(scenario)}' "
                                            "and attributes.status = 'FINISHED'")
    return runs[0].info.run_id if runs else None


Runner = Callable[..., object]  # simulate(scenario, progress=..., tags=...) -> RunSummary


def run_sweep(cells: Sequence[Cell], name: str, progress: TextIO | None = sys.stdout,
              runner: Runner | None = None) -> list[str]:
    """Run the cells not yet FINISHED, in order; returns every cell's MLflow run id."""
    if runner is None:
        from flowerbed.server.simulate import simulate as runner
    run_ids = []
    for i, cell in enumerate(cells, 1):
        scenario = cell.scenario
        head = f"[{i}/{len(cells)}] {cell.variant.label} seed {cell.seed}"
        done = finished_run(tracking_client(scenario.mlflow.tracking_uri), scenario)
        if done:
            _say(progress, f"{head}: finished already (run {done}), skipped")
            run_ids.append(done)
            continue
        _say(progress, f"{head}: running")
        started = time.perf_counter()
        summary = runner(scenario, progress=None, tags={SWEEP_TAG: name, **cell.variant.tags})
        last = summary.history.get(scenario.rounds, {})
        _say(progress, f"{head}: done in {time.perf_counter() - started:.0f} s, global accuracy "
                       f"{last.get('global_accuracy', float('nan')):.4f}, personalized "
                       f"{last.get('personalized_accuracy', float('nan')):.4f}")
        run_ids.append(summary.run_id)
    return run_ids


def _say(progress: TextIO | None, line: str) -> None:
    if progress is not None:
        print(line, file=progress, flush=True)


def run_filter(run_ids: Sequence[str]) -> str:
    """An MLflow filter for exactly these runs (what the sweep's comparison reads)."""
    return "attributes.run_id IN (" + ", ".join(f"'{r}'" for r in run_ids) + ")"
