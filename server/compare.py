"""Compare an experiment's runs: a table (mean ± std over seeds, last and best round)
and a plot of accuracy against round, grouped by scenario and method by default.

Runs of different round counts are never averaged together: such a group is split by
round count, and the table says so. Nothing is written to the store: the table is
printed (and saved where asked, the CLI: beside the PNG as ``<output>.md``).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from mlflow.tracking import MlflowClient

from flowerbed.server.tracking import KIND_TAG, tracking_client

ACCURACIES = ("global_accuracy", "personalized_accuracy")
#: Tags a comparison groups runs by unless told otherwise.
GROUP_BY = ("scenario", "method")


@dataclass
class RunCurves:
    """One simulation run: its group (its values of the group-by tags), seed, wall time
    and per-round accuracies."""

    group: str
    seed: str
    seconds: float
    curves: dict[str, dict[int, float]]  # metric -> round -> value

    def final(self, metric: str) -> float:
        curve = self.curves.get(metric, {})
        return curve[max(curve)] if curve else float("nan")

    def best(self, metric: str) -> float:
        values = [v for step, v in self.curves.get(metric, {}).items() if step > 0]
        return max(values) if values else float("nan")

    @property
    def rounds(self) -> int:
        return max((max(c) for c in self.curves.values() if c), default=0)


def load_runs(client: MlflowClient, experiment_id: str, group_by: tuple[str, ...] = GROUP_BY,
              metrics: tuple[str, ...] = ACCURACIES, where: str = "") -> list[RunCurves]:
    """Every finished run but the summaries (simulations, and references such as a
    centralized ceiling logged by a results script), narrowed by an MLflow filter ``where``."""
    query = f"tags.`{KIND_TAG}` != 'summary' and attributes.status = 'FINISHED'" + (f" and {where}" if where else "")
    runs = client.search_runs([experiment_id], filter_string=query, max_results=10_000)
    loaded = []
    for run in runs:
        curves = {m: {h.step: h.value for h in client.get_metric_history(run.info.run_id, m)}
                  for m in metrics}
        end = run.info.end_time or run.info.start_time
        group = " / ".join(run.data.tags.get(tag, "?") for tag in group_by)
        loaded.append(RunCurves(group, run.data.tags.get("seed", "?"),
                                (end - run.info.start_time) / 1000.0, curves))
    return loaded


def _mean_std(values: list[float]) -> str:
    arr = np.asarray(values, dtype=float)
    std = arr.std(ddof=1) if len(arr) > 1 else 0.0
    return f"{arr.mean():.4f} ± {std:.4f}"


def group_runs(runs: list[RunCurves]) -> tuple[dict[str, list[RunCurves]], list[str]]:
    """Runs by group; a group whose runs differ in round count is split by it (a row
    per count, ``[N rounds]`` in its name), with a note saying so."""
    groups: dict[str, list[RunCurves]] = {}
    for run in runs:
        groups.setdefault(run.group, []).append(run)
    split: dict[str, list[RunCurves]] = {}
    notes = []
    for name, members in groups.items():
        counts = sorted({r.rounds for r in members})
        if len(counts) == 1:
            split[name] = members
            continue
        notes.append(f"note: {name} has runs of {', '.join(map(str, counts))} rounds; "
                     "not averaged together, one row per round count")
        for count in counts:
            split[f"{name} [{count} rounds]"] = [r for r in members if r.rounds == count]
    return split, notes


def table(groups: dict[str, list[RunCurves]], metrics: tuple[str, ...] = ACCURACIES,
          group_by: tuple[str, ...] = GROUP_BY) -> str:
    """Markdown table: per group, final and best accuracies as mean ± std over seeds."""
    head = [" / ".join(group_by), "runs", "rounds"]
    for metric in metrics:
        head += [f"final {metric}", f"best {metric}"]
    head.append("wall s")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, runs in sorted(groups.items()):
        row = [name, str(len(runs)), str(max(r.rounds for r in runs))]
        for metric in metrics:
            row += [_mean_std([r.final(metric) for r in runs]), _mean_std([r.best(metric) for r in runs])]
        row.append(_mean_std([r.seconds for r in runs]))
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def plot(groups: dict[str, list[RunCurves]], path: Path, metrics: tuple[str, ...] = ACCURACIES) -> None:
    """Accuracy against round, one line per group (mean over seeds, ± std band)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics), 4), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for name, runs in sorted(groups.items()):
            steps = sorted(set().union(*(r.curves.get(metric, {}).keys() for r in runs)))
            if not steps:
                continue
            values = np.array([[r.curves.get(metric, {}).get(s, np.nan) for s in steps] for r in runs])
            mean, std = np.nanmean(values, axis=0), np.nanstd(values, axis=0)
            ax.plot(steps, mean, label=name)
            ax.fill_between(steps, mean - std, mean + std, alpha=0.2)
        ax.set_xlabel("round")
        ax.set_ylabel(metric.replace("_", " "))
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def compare(experiment: str, tracking_uri: str, output: Path, group_by: tuple[str, ...] = GROUP_BY,
            metrics: tuple[str, ...] = ACCURACIES, where: str = "", table_output: Path | None = None) -> int:
    """Print the table of ``experiment``'s finished runs (narrowed by the MLflow filter
    ``where``), write the plot to ``output`` and the table to ``table_output``; 2 if no runs."""
    client = tracking_client(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        print(f"flowerbed: error: --experiment: no experiment named {experiment!r} at {tracking_uri}",
              file=sys.stderr)
        return 2
    runs = load_runs(client, found.experiment_id, group_by, metrics, where)
    if not runs:
        print(f"flowerbed: error: --experiment: {experiment!r} has no runs"
              + (f" matching --where {where!r}" if where else ""), file=sys.stderr)
        return 2
    groups, notes = group_runs(runs)
    text = "\n".join([table(groups, metrics, group_by), *notes])
    print(text)
    plot(groups, output, metrics)
    if table_output is not None:
        table_output.write_text(text + "\n")
    print(f"wrote {output}" + (f" and {table_output}" if table_output else ""))
    return 0
