"""Compare an experiment's runs by strategy: a table (mean ± std over seeds) and a plot.

The PNG of accuracy against round is written locally and logged, with the table, as
artifacts of a summary run in the same experiment (tagged so that later comparisons
skip it).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from mlflow.entities import RunTag
from mlflow.tracking import MlflowClient

from flowerbed.server.tracking import KIND_TAG

ACCURACIES = ("global_accuracy", "personalized_accuracy")


@dataclass
class RunCurves:
    """One simulation run: its strategy, seed, wall time and per-round accuracies."""

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


def load_runs(client: MlflowClient, experiment_id: str, group_by: str = "strategy",
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
        loaded.append(RunCurves(run.data.tags.get(group_by, "?"), run.data.tags.get("seed", "?"),
                                (end - run.info.start_time) / 1000.0, curves))
    return loaded


def _mean_std(values: list[float]) -> str:
    arr = np.asarray(values, dtype=float)
    std = arr.std(ddof=1) if len(arr) > 1 else 0.0
    return f"{arr.mean():.4f} ± {std:.4f}"


def table(groups: dict[str, list[RunCurves]], metrics: tuple[str, ...] = ACCURACIES,
          group_by: str = "strategy") -> str:
    """Markdown table: per group, final and best accuracies as mean ± std over seeds."""
    head = [group_by, "runs", "rounds"]
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


def compare(experiment: str, tracking_uri: str, output: Path, group_by: str = "strategy",
            metrics: tuple[str, ...] = ACCURACIES, where: str = "") -> int:
    client = MlflowClient(tracking_uri=tracking_uri)
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
    groups: dict[str, list[RunCurves]] = {}
    for run in runs:
        groups.setdefault(run.group, []).append(run)
    text = table(groups, metrics, group_by)
    print(text)
    plot(groups, output, metrics)
    summary = client.create_run(found.experiment_id, run_name=f"compare-{experiment}",
                                tags={KIND_TAG: "summary"})
    client.log_text(summary.info.run_id, text + "\n", "compare.md")
    client.log_artifact(summary.info.run_id, str(output))
    client.log_batch(summary.info.run_id, tags=[RunTag("groups", ",".join(sorted(groups))),
                                                RunTag("group_by", group_by)])
    client.set_terminated(summary.info.run_id)
    print(f"wrote {output}; logged to summary run {summary.info.run_id}")
    return 0
