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
from results_common import (LABEL, REPO, add_common_arguments, curve, finished_runs, last_and_best, mean_std,
                            per_round, run_labelled, setting_runs, write_page)

from flowerbed.server.cli import quiet_logs

# Scenario -> (file, FedLabel's mean local steps per round at 10% labels: labelled pass
# of batch 16 plus unlabelled steps, for FedAvg-100%'s equal budget; overrides of the file).
SCENARIOS = {
    "S1": (REPO / "sims" / "fedlabel_fmnist.toml", 9, []),   # ~60 labels: 4 steps, + 5 unlabelled steps
    "S2": (REPO / "sims" / "fedlabel_usps.toml", 16, []),    # ~73 labels: 5 steps, + one pass of ~656 at 64: 11
    # Sensitivity: S1 with a fifth of the spec's learning rate (its global model sits at one
    # class for the first rounds at lr 0.05 with momentum 0.9, whatever the method).
    "S1-lr0.01": (REPO / "sims" / "fedlabel_fmnist.toml", 9, ["client.lr=0.01"]),
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
    common = SCENARIOS[scenario][2]
    if method == "fedavg_100":
        return [*common, "strategy.name='fedavg'", "partition.labeled_fraction=1.0",
                f"client.max_local_steps={SCENARIOS[scenario][1]}"]
    if method == "fedavg_100_epoch":
        return [*common, "strategy.name='fedavg'", "partition.labeled_fraction=1.0"]
    return [*common, *METHODS[method], f"partition.labeled_fraction={labels}"]


def setting(scenario: str, labels: float) -> str:
    return f"{scenario}@{labels:g}"


def last_value(uri: str, runs: list, metric: str) -> str:
    values = last_and_best(uri, runs, metric)[0]
    return mean_std(values) if not np.isnan(values).all() else "–"


TRAJECTORY_ROUNDS = (5, 10, 20, 50, 100)
CHANCE = 0.11  # a global accuracy below it: the model predicts (nearly) one class of ten


def at_chance(uri: str, runs: list, metric: str) -> list[float]:
    """Per run: the share of its rounds whose global model scores below CHANCE."""
    curves = [curve(uri, r.info.run_id, metric) for r in runs]
    return [float(np.mean([v < CHANCE for v in c.values()])) if c else float("nan") for c in curves]
TAIL = 10  # rounds in the last-rounds mean


def tail_mean(uri: str, runs: list, metric: str) -> list[float]:
    """Per run: the metric's mean over its last TAIL rounds (steadier than one round when
    each round samples a tenth of the clients)."""
    curves = [curve(uri, r.info.run_id, metric) for r in runs]
    return [float(np.mean([c[k] for k in sorted(c)[-TAIL:]])) if c else float("nan") for c in curves]


def trajectory(uri: str, runs: dict[str, list]) -> list[str]:
    """How accuracy and pseudo-labels evolve: the accuracy and the diagnostics (where
    the method pseudo-labels) at a few rounds, mean over seeds."""
    lines = ["| method | round | accuracy | PL rate | PL accuracy | local wins | local teacher | global teacher |",
             "|---|---|---|---|---|---|---|---|"]
    for method, chosen in runs.items():
        curves = {k: [curve(uri, r.info.run_id, k) for r in chosen] for k in (METRIC, *DIAGNOSTICS)}
        for step in TRAJECTORY_ROUNDS:
            cells = []
            for key in (METRIC, *DIAGNOSTICS):
                values = [c[step] for c in curves[key] if step in c]
                cells.append(f"{100 * np.mean(values):.1f}" if values else "–")
            if cells[0] != "–":
                lines.append(f"| {method} | {step} | {' | '.join(cells)} |")
    return lines


# What reproduces and what does not, and the reading of the tables below (edit with them).
IN_ONE_LINE = (
    '**In one line.** Reproduced on USPS (S2, 10% labels, 3 seeds): FedLabel above labelled-only FedAvg '
    '(+2.1 points, beyond the spread) and above FedAvg + FixMatch. Not reproduced: FixMatch above '
    'labelled-only (S2: one seed of three collapses), FedLabel matching FedAvg with all labels (S2: 0.9 '
    "below at the same step count), and any ordering on Fashion-MNIST's 100 clients (S1), where every "
    "method's global model swings from round to round and the global teacher is right on 46% of the "
    "unlabelled samples. The default a user gets: the spec's reading (two phases, this round's local "
    'model as local teacher, max-prob confidence, ratio-weighted consistency).')
NOTES = """## Reading the tables

- **S2 (USPS, 10 clients, all every round), 10% labels, 3 seeds.** FedLabel is above labelled-only FedAvg by
  more than the seed spread: 94.82 ± 0.35 against 92.68 ± 0.31 (mean of the last 10 rounds), and above it in
  every seed. FedAvg + FixMatch is not: 89.50 ± 6.20, per seed 94.18 / 91.85 / 82.46 against labelled-only
  92.85 / 92.32 / 92.87. Its pseudo-labels are the measured difference: FixMatch's student labels itself from
  round 1, and its pseudo-label accuracy is 50% at round 5 and 67% at round 20 (FedLabel's: 97% and 91%), 95.1%
  at round 100 (FedLabel's 99.3%). FedProx + FixMatch (1 seed) ends at 92.12, level with labelled-only. So on S2
  the ordering holds as labelled-only ≈ FixMatch < FedLabel, not labelled-only < FixMatch < FedLabel.
- **Against FedAvg with all labels.** With FedLabel's step count (16 a round) FedAvg on all labels reaches
  95.71 ± 0.34, with one pass over all the data 96.40 (1 seed): FedLabel stays 0.9 below the equal-budget
  reference, beyond the spread. The paper's claim that FedLabel matches or beats FedAvg with all labels does
  not reproduce at this scale.
- **Which teacher does the work (S2 ablations).** The local teacher alone 94.84 ± 0.63 (2 seeds) equals
  FedLabel; the global teacher alone 94.12 ± 0.62 (2 seeds) is 0.7 lower, within about one spread. Choosing per
  sample (the local teacher wins 85% of the choices at round 100) adds nothing measurable over the local teacher
  alone here. What separates every FedLabel variant from FixMatch is a frozen teacher that scores a sample before
  the student trains on it: their pseudo-label accuracies are 98.7-99.4% at round 100, FixMatch's 95.1%. The
  consistency term (without it: 94.74, 1 seed) and the single-loop schedule (94.81, 1 seed; it learns faster
  early, 66.7% at round 10 against 34.3%) move the end point by less than the spread.
- **The local teacher: `local_teacher = "this_round"` stays the default, by measurement.** The spec's reading
  (the model fitted to this round's labels, starting from the received global model) against the issue's
  wording (`"previous_round"`: the client's model from its last round, kept in `Context.state`): 94.66 against
  91.74 on seed 0, with pseudo-label accuracy 99.3% against 80.7%. The previous-round model has already trained
  on its own pseudo-labels; it wins 93% of the choices while being right on 79% of the unlabelled samples (the
  calibration trap of spec §8.3). 1 seed; the option stays.
- **S1 (Fashion-MNIST, 100 clients, 10 a round), 10% labels, seeds 0, 1, 3** (seed 2's split cannot be
  drawn: flwr-datasets' Dirichlet partitioner gives up after 10 attempts at `min_partition_size = 10`, and the
  run fails before round 1). No method is apart from another: labelled-only 56.55 ± 9.87, FixMatch
  53.24 ± 4.55, FedLabel 54.79 ± 11.54 (per seed 57.18 / 64.95 / 42.25 against labelled-only 63.55 / 60.83 /
  45.27), the global teacher alone 53.90 (1 seed). FedAvg with all labels and the same steps reaches
  63.88 ± 0.89 on seeds 0 and 1 only (labelled-only on those two: 62.19; its Δ above compares unequal seed sets). What the measurements show about this regime: the global model swings from round to
  round (labelled-only's and FedLabel's last-round std is 15-18 points; 4-15% of rounds end at chance, a model that predicts about
  one class) and is still rising at round 100 for every method; and FedLabel's lever is missing, because the
  global teacher is weak: right on 46% of the clients' unlabelled samples at round 100 (S2: 95%), so the
  local teacher wins 68% of the choices and only 33% of the unlabelled samples pass beta (S2: 91%). A fifth
  of the learning rate (S1-lr0.01, 1 seed) does not settle it: 59.93 / 54.19 / 55.08 for labelled-only /
  FixMatch / FedLabel, with 6-10% of rounds at chance. The spec's 150 rounds and more seeds are the next
  measurement; this page does not claim an ordering on S1.
- **Costs** (s / round, S2, one core per simulation while another ran beside it): labelled-only 0.96,
  FixMatch 2.73, FedLabel 2.92 (the unlabelled pass with two teacher forwards and the strong view). Nothing
  is communicated beyond FedAvg's model, both ways.
- **Not run here yet** (the commands add them to the tables above): 5% and 20% labels
  (`.venv/bin/python bench/fedlabel_results.py --scenarios S1 S2 --labels 0.05 0.2 --seeds 0 1 3 --methods
  fedavg fixmatch fedlabel fedavg_100`); the third S2 seed of the ablations (`--scenarios S2 --labels 0.1
  --seeds 2 --methods fedprox_fixmatch fedlabel_local fedlabel_global fedlabel_no_consistency
  fedlabel_single_loop fedlabel_previous_round`) and their second where one is shown; the S1 ablations beyond
  the global teacher (`--scenarios S1 --labels 0.1 --seeds 0 1 3 --methods fedprox_fixmatch fedlabel_local
  fedlabel_global fedlabel_no_consistency fedlabel_single_loop fedlabel_previous_round fedavg_100_epoch`);
  FedAvg-100% on S1 seed 3.
- Tests that fail if the algorithm breaks (`tests/test_fedlabel.py`): poisoned hidden labels leave the trained
  model unchanged; beta above 1 equals labelled-only training; a local teacher forced equal to the global one
  equals FixMatch with the global teacher; the chosen teacher per sample is the more confident one.
"""


def summarize(args: argparse.Namespace) -> str:
    uri, experiment = args.tracking_uri, args.experiment
    lines = ["# FedLabel: results", "", IN_ONE_LINE, "",
             "Written by `bench/fedlabel_results.py` from the runs in its MLflow experiment; each table says the "
             "command that reruns it. Accuracy in %: the global model on the whole test set, mean ± std over seeds; "
             "*last* = last round; *last 10* = mean of the last 10 rounds (primary: S1 samples 10 of 100 "
             "label-skewed clients a round, so one round's global model swings); *best* = best round (optimistic: "
             "chosen on the test set). Δ = difference in *last 10* to labelled-only FedAvg. *At chance*: the share of "
             "rounds whose global model scores below 11% (it predicts about one class). Diagnostics at the last round, in %, pooled over the round's "
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
            extra = f" with `{' '.join(SCENARIOS[name][2])}`" if SCENARIOS[name][2] else ""
            lines += [f"## {name}, {100 * labels:g}% labels: `{SCENARIOS[name][0].name}`{extra}", "", f"Rerun: `{rerun}`", "",
                      "| method | seeds | last | last 10 | best | Δ last 10 | at chance | PL rate | PL accuracy "
                      "| local wins | local teacher | global teacher | s / round |",
                      "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
            base = np.nanmean(tail_mean(uri, runs["fedavg"], METRIC)) if "fedavg" in runs else float("nan")
            for method, chosen in runs.items():
                last, best = last_and_best(uri, chosen, METRIC)
                tail = tail_mean(uri, chosen, METRIC)
                delta = f"{100 * (np.nanmean(tail) - base):+.2f}" if method != "fedavg" else "–"
                diagnostics = " | ".join(last_value(uri, chosen, k) for k in DIAGNOSTICS)
                chance = mean_std(at_chance(uri, chosen, METRIC))
                lines.append(f"| {method} | {len(last)} | {mean_std(last)} | {mean_std(tail)} | {mean_std(best)} | {delta} | "
                             f"{chance} | "
                             f"{diagnostics} | {per_round(uri, chosen, 'round_seconds'):.2f} |")
            lines += ["", f"Over the rounds ({name}, {100 * labels:g}% labels; accuracy and diagnostics in %, mean over "
                      "the seeds above):", "", *trajectory(uri, runs), ""]
    return "\n".join([*lines, NOTES]) + "\n"


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
