"""What the results scripts share: their common options, running a scenario file with
overrides and tagging the run, and reading the finished runs of an experiment back
from MLflow."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from mlflow.tracking import MlflowClient

from flowerbed.server.simulate import simulate
from flowerbed.sims.config import load_scenario


REPO = Path(__file__).resolve().parents[1]


def add_common_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    """--seeds, --rounds, --tracking-uri, --experiment ``<name>_results``, --output
    ``docs/results/<name>.md`` and --summarize-only."""
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--rounds", type=int, help="override the scenarios' rounds (quick looks)")
    parser.add_argument("--tracking-uri", default=f"sqlite:///{REPO / 'mlflow.db'}")
    parser.add_argument("--experiment", default=f"{name}_results")
    parser.add_argument("--output", default=str(REPO / "docs" / "results" / f"{name}.md"))
    parser.add_argument("--summarize-only", action="store_true",
                        help="run nothing; tabulate the finished runs already in the experiment")


def run_tagged(path: Path, overrides: list[str], seed: int, rounds: int | None, uri: str, experiment: str,
               tags: dict[str, str]) -> str:
    """Simulate the scenario file with ``overrides``; tag the MLflow run; return its id."""
    overrides = [*overrides, f"seed={seed}", f"mlflow.tracking_uri='{uri}'", f"mlflow.experiment='{experiment}'"]
    if rounds:
        overrides.append(f"rounds={rounds}")
    started = time.time()
    summary = simulate(load_scenario(path, overrides), progress=None)
    client = MlflowClient(uri)
    for key, value in tags.items():
        client.set_tag(summary.run_id, key, value)
    print(f"{' '.join(tags.values())} seed {seed}: {time.time() - started:.0f} s", flush=True)
    return summary.run_id


def finished_runs(uri: str, experiment: str, tag: str) -> dict[str, list]:
    """tag value -> the experiment's FINISHED runs carrying ``tag``, oldest first."""
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return {}
    runs = client.search_runs([exp.experiment_id], "attributes.status = 'FINISHED'")
    grouped: dict[str, list] = {}
    for run in sorted(runs, key=lambda r: r.info.start_time):
        if tag in run.data.tags:
            grouped.setdefault(run.data.tags[tag], []).append(run)
    return grouped


def history(uri: str, run_id: str, metric: str) -> dict[int, float]:
    return {m.step: m.value for m in MlflowClient(uri).get_metric_history(run_id, metric)}


def mean_std(values: list[float], scale: float = 100.0) -> str:
    arr = scale * np.asarray(values, dtype=float)
    if len(arr) == 0 or np.isnan(arr).all():
        return "–"
    std = arr.std(ddof=1) if len(arr) > 1 else 0.0
    return f"{np.nanmean(arr):.2f} ± {std:.2f}"
