"""FedLabel against labelled-only FedAvg, FedAvg/FedProx + FixMatch and FedAvg with all
labels, with its ablations (a results script, not a test).

Runs each method with several seeds on the spec's offline scenarios S1 (Fashion-MNIST,
100 clients, 10 a round) and S2 (USPS, 10 clients, all every round) at 5%, 10% and 20%
labels, through ``flowerbed sweep``'s machinery (finished runs are not run again), and
writes ``docs/results/fedlabel.md``: the global model's accuracy on the whole test set at
the last and the best round, mean ± std over seeds; the pseudo-label diagnostics (rate,
accuracy against the hidden labels, how often the local teacher won) at the last round;
seconds per round. FedAvg with all labels does not depend on the labelled fraction and
runs once per scenario: with FedLabel's mean step count at 10% labels (``fedavg_100``)
and with one pass over all the data (``fedavg_100_epoch``).

    .venv/bin/python bench/fedlabel_results.py --scenarios S2 --labels 0.1 --seeds 0 1 2
    .venv/bin/python bench/fedlabel_results.py --scenarios S1 S2 --labels 0.05 0.2 --methods fedavg fixmatch fedlabel
    .venv/bin/python bench/fedlabel_results.py --summarize-only --scenarios S1 S2
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
from results_common import (LABEL, REPO, add_common_arguments, finished_runs, last_and_best, mean_std, per_round,
                            run_labelled, setting_runs, write_page)

from flowerbed.server.cli import quiet_logs

# Scenario -> (file, FedLabel's mean local steps per round at 10% labels: labelled pass
# of batch 16 plus unlabelled steps, for FedAvg-100%'s equal budget).
SCENARIOS = {
    "S1": (REPO / "sims" / "fedlabel_fmnist.toml", 9),   # ~60 labels: 4 steps, + 5 unlabelled steps
    "S2": (REPO / "sims" / "fedlabel_usps.toml", 16),    # ~73 labels: 5 steps, + one pass of ~656 at 64: 11
}
LABELS = (0.05, 0.1, 0.2)
METHODS = {
    "fedavg": ["strategy.name='fedavg'"],  # labelled data only
    "fixmatch": ["strategy.name='fixmatch'"],
    "fedprox_fixmatch": ["strategy.name='fixmatch'", "strategy.fixmatch.proximal_mu=0.01"],
    "fedlabel": ["strategy.name='fedlabel'"],
    # Ablations.
    "fedlabel_local": ["strategy.name='fedlabel'", "strategy.fedlabel.teachers='local'"],
    "fedlabel_global": ["strategy.name='fedlabel'", "strategy.fedlabel.teachers='global'"],
    "fedlabel_no_consistency": ["strategy.name='fedlabel'", "strategy.fedlabel.consistency=false"],
    "fedlabel_single_loop": ["strategy.name='fedlabel'", "strategy.fedlabel.schedule='single_loop'"],
    "fedlabel_previous_round": ["strategy.name='fedlabel'", "strategy.fedlabel.local_teacher='previous_round'"],
}
FULL_LABELS = ("fedavg_100", "fedavg_100_epoch")  # all labels: once per scenario, under the 10% setting
METRIC = "global_accuracy"
DIAGNOSTICS = ("pseudo_label_rate", "pseudo_label_accuracy", "local_win_rate", "local_teacher_accuracy",
               "global_teacher_accuracy")


def overrides(scenario: str, method: str, labels: float) -> list[str]:
    if method == "fedavg_100":
        return ["strategy.name='fedavg'", "partition.labeled_fraction=1.0",
                f"client.max_local_steps={SCENARIOS[scenario][1]}"]
    if method == "fedavg_100_epoch":
        return ["strategy.name='fedavg'", "partition.labeled_fraction=1.0"]
    return [*METHODS[method], f"partition.labeled_fraction={labels}"]


def setting(scenario: str, labels: float) -> str:
    return f"{scenario}@{labels:g}"


def last_value(uri: str, runs: list, metric: str) -> str:
    values = last_and_best(uri, runs, metric)[0]
    return mean_std(values) if not np.isnan(values).all() else "–"


def summarize(args: argparse.Namespace) -> str:
    uri, experiment = args.tracking_uri, args.experiment
    lines = ["# FedLabel: results", "",
             "Written by `bench/fedlabel_results.py` from the runs in its MLflow experiment; each table says the "
             "command that reruns it. Accuracy in %: the global model on the whole test set, mean ± std over seeds; "
             "*last* = last round (primary); *best* = best round (optimistic: chosen on the test set). Δ = last-round "
             "difference to labelled-only FedAvg. Diagnostics at the last round, in %, pooled over the round's "
             "clients: pseudo-label rate (unlabelled samples whose teacher passed beta), pseudo-label accuracy "
             "(against the hidden true labels, which no training loss sees), how often the local teacher won, and "
             "each teacher's accuracy on all unlabelled samples. FedAvg with all labels (*fedavg_100*: FedLabel's "
             "mean step count at 10% labels; *fedavg_100_epoch*: one pass over all the data) is the same at every "
             "fraction and shown under 10%.", ""]
    grouped = finished_runs(uri, experiment, LABEL)
    for name in args.scenarios:
        for labels in args.labels:
            runs, seeds = setting_runs(grouped, [*METHODS, *FULL_LABELS], setting(name, labels))
            if not runs:
                continue
            rerun = (f".venv/bin/python bench/fedlabel_results.py --scenarios {name} --labels {labels:g} "
                     f"--seeds {' '.join(map(str, seeds))} --methods {' '.join(runs)}")
            lines += [f"## {name}, {100 * labels:g}% labels: `{SCENARIOS[name][0].name}`", "", f"Rerun: `{rerun}`", "",
                      "| method | seeds | last | best | Δ last | PL rate | PL accuracy | local wins | local teacher "
                      "| global teacher | s / round |", "|---|---|---|---|---|---|---|---|---|---|---|"]
            base = np.nanmean(last_and_best(uri, runs["fedavg"], METRIC)[0]) if "fedavg" in runs else float("nan")
            for method, chosen in runs.items():
                last, best = last_and_best(uri, chosen, METRIC)
                delta = f"{100 * (np.nanmean(last) - base):+.2f}" if method != "fedavg" else "–"
                diagnostics = " | ".join(last_value(uri, chosen, k) for k in DIAGNOSTICS)
                lines.append(f"| {method} | {len(last)} | {mean_std(last)} | {mean_std(best)} | {delta} | "
                             f"{diagnostics} | {per_round(uri, chosen, 'round_seconds'):.2f} |")
            lines.append("")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", nargs="+", default=["S2"], choices=list(SCENARIOS))
    parser.add_argument("--labels", nargs="+", type=float, default=[0.1], choices=LABELS)
    parser.add_argument("--methods", nargs="+", default=[*METHODS, *FULL_LABELS], choices=[*METHODS, *FULL_LABELS])
    add_common_arguments(parser, "fedlabel")
    args = parser.parse_args()
    quiet_logs()
    if not args.summarize_only:
        for name in args.scenarios:
            for labels in args.labels:
                for method in args.methods:
                    if method in FULL_LABELS and labels != 0.1:
                        continue
                    run_labelled(SCENARIOS[name][0], method, overrides(name, method, labels), args.seeds, args.rounds,
                                 args.tracking_uri, args.experiment, {"setting": setting(name, labels)})
    write_page(args.output, summarize(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
