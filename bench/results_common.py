"""What the results scripts share: their common options, running a labelled method on a
scenario file through ``flowerbed sweep``'s machinery (a run already FINISHED with the
same resolved config is not run again, so an interrupted script continues where it
stopped), and reading the finished runs of an experiment back from MLflow."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from flowerbed.server.sweep import Variant, plan, run_sweep
from flowerbed.server.tracking import get_or_create_experiment


REPO = Path(__file__).resolve().parents[1]
#: The tag naming a results script's row (its own label of a method and its options).
LABEL = "label"


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


def run_labelled(path: Path, label: str, overrides: list[str], seeds: list[int], rounds: int | None, uri: str,
                 experiment: str, tags: dict[str, str] | None = None) -> list[str]:
    """Simulate the scenario file with ``overrides`` for each seed, tagged ``label`` (and
    ``tags``); skips the seeds already FINISHED with the same resolved config (such a run
    keeps the label it was made with). Returns the run ids."""
    common = [f"mlflow.tracking_uri='{uri}'", f"mlflow.experiment='{experiment}'"]
    if rounds:
        common.append(f"rounds={rounds}")
    variant = Variant(label, tuple(overrides), {LABEL: label, **(tags or {})})
    return run_sweep(plan(path, [variant], seeds, common), name=experiment)


def label_of(run) -> str | None:
    """A run's row label: its ``label`` tag, or, for runs made before the label tag
    existed, the ``method`` tag the results scripts set then."""
    return run.data.tags.get(LABEL, run.data.tags.get("method"))


def finished_runs(uri: str, experiment: str, tag: str) -> dict[str, list]:
    """tag value -> the experiment's FINISHED runs carrying ``tag`` (``label``: see
    :func:`label_of`), oldest first."""
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return {}
    runs = client.search_runs([exp.experiment_id], "attributes.status = 'FINISHED'")
    grouped: dict[str, list] = {}
    for run in sorted(runs, key=lambda r: r.info.start_time):
        value = label_of(run) if tag == LABEL else run.data.tags.get(tag)
        if value is not None:
            grouped.setdefault(value, []).append(run)
    return grouped


def setting_runs(grouped: dict[str, list], methods, setting: str) -> tuple[dict[str, list], list[int]]:
    """Of :func:`finished_runs`' groups, each method's runs tagged ``setting`` (methods
    without one left out), and the seeds they cover."""
    runs = {m: [r for r in grouped.get(m, []) if r.data.tags.get("setting") == setting] for m in methods}
    runs = {m: rs for m, rs in runs.items() if rs}
    return runs, sorted({int(r.data.tags["seed"]) for rs in runs.values() for r in rs})


def history(uri: str, run_id: str, metric: str) -> dict[int, float]:
    return {m.step: m.value for m in MlflowClient(uri).get_metric_history(run_id, metric)}


def curve(uri: str, run_id: str, metric: str) -> dict[int, float]:
    """A metric's history after training started (round 0, the untrained model, left out)."""
    values = history(uri, run_id, metric)
    values.pop(0, None)
    return values


def last_and_best(uri: str, runs: list, metric: str) -> tuple[list[float], list[float]]:
    """Per run: the metric at its last round and at its best round (NaN if never logged)."""
    curves = [curve(uri, r.info.run_id, metric) for r in runs]
    last = [c[max(c)] if c else float("nan") for c in curves]
    return last, [max(c.values()) if c else float("nan") for c in curves]


def per_round(uri: str, runs: list, metric: str) -> float:
    """The mean over runs of the metric's mean over rounds."""
    return float(np.mean([np.mean(list(curve(uri, r.info.run_id, metric).values())) for r in runs]))


def write_page(output: str, text: str) -> None:
    """Write a results page (making its folder) and print it."""
    path = Path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    print(text)


def mean_std(values: list[float], scale: float = 100.0) -> str:
    arr = scale * np.asarray(values, dtype=float)
    if len(arr) == 0 or np.isnan(arr).all():
        return "–"
    std = arr.std(ddof=1) if len(arr) > 1 else 0.0
    return f"{np.nanmean(arr):.2f} ± {std:.2f}"


def save_records(uri: str, experiment: str, path: str, prefixes: tuple[str, ...]) -> int:
    """Write the experiment's FINISHED runs to ``path`` as JSON: tags, params and the full
    history of each metric whose name starts with one of ``prefixes`` (what a page reads),
    so that the page can be made again without the MLflow store. Returns the run count."""
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], "attributes.status = 'FINISHED'") if exp else []
    records = []
    for run in sorted(runs, key=lambda r: r.info.start_time):
        metrics = {key: sorted([m.step, m.value] for m in client.get_metric_history(run.info.run_id, key))
                   for key in sorted(run.data.metrics) if key.startswith(prefixes)}
        records.append({"run_id": run.data.tags.get("record_of", run.info.run_id), "run_name": run.info.run_name,
                        "start_time": run.info.start_time, "end_time": run.info.end_time,
                        "tags": {k: v for k, v in run.data.tags.items()
                                 if not k.startswith("mlflow.") and k != "record_of"},
                        "params": run.data.params, "metrics": metrics})
    Path(path).write_text(json.dumps({"experiment": experiment, "runs": records}, indent=0) + "\n")
    return len(records)


def load_records(path: str, uri: str, experiment: str) -> int:
    """Add to the experiment the runs of :func:`save_records`' file that it lacks (by
    their original run id, kept in the tag ``record_of``), FINISHED, with their tags,
    params and metric histories. Returns how many were added."""
    if not Path(path).is_file():
        return 0
    client = MlflowClient(uri)
    exp_id = get_or_create_experiment(client, experiment)  # its artifacts beside a SQLite store
    present = {r.data.tags.get("record_of", r.info.run_id) for r in client.search_runs([exp_id])}
    added = 0
    for record in json.loads(Path(path).read_text())["runs"]:
        if record["run_id"] in present:
            continue
        run = client.create_run(exp_id, start_time=record["start_time"], run_name=record["run_name"],
                                tags={**record["tags"], "record_of": record["run_id"]})
        params = [Param(k, v) for k, v in record["params"].items()]
        metrics = [Metric(k, value, record["start_time"], int(step))
                   for k, points in record["metrics"].items() for step, value in points]
        for start in range(0, len(params), 100):
            client.log_batch(run.info.run_id, params=params[start:start + 100])
        for start in range(0, len(metrics), 1000):
            client.log_batch(run.info.run_id, metrics=metrics[start:start + 1000])
        client.set_terminated(run.info.run_id, "FINISHED", end_time=record["end_time"])
        added += 1
    return added
