"""FedLoGe against FedAvg, FedPer and FedBABU on long-tailed Fashion-MNIST (a results
script, not a test).

Runs each method with several seeds on ``sims/fedloge_fmnist_lt.toml``, logs them to
one MLflow experiment and writes ``docs/results/fedloge.md``: generic accuracy on the
balanced test set and personalized accuracy on the clients' label-matched test splits,
overall and per head / middle / tail class group, at the last round (mean ± std over
seeds), with the spec's CIFAR reference numbers for context.

    .venv/bin/python bench/fedloge_results.py                          # 4 methods x 3 seeds
    .venv/bin/python bench/fedloge_results.py --seeds 0 --rounds 5     # quick look
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from results_common import LABEL, REPO, add_common_arguments, finished_runs, history, mean_std, run_labelled

from flowerbed.server.cli import quiet_logs
from flowerbed.server.compare import compare

SCENARIO = REPO / "sims" / "fedloge_fmnist_lt.toml"
METHODS = {
    "fedloge": [],
    "fedavg": ["strategy.name='fedavg'"],
    "fedper": ["strategy.name='fedper'"],
    "fedbabu": ["strategy.name='fedbabu'"],
    # FedLoGe with SSE-C column norm 1.0 instead of the paper's 0.1: the fix the
    # diagnostics below point to (the norm is a logit temperature; see the results page).
    "fedloge-norm1": ["strategy.fedloge.etf_norm=1.0"],
    # Diagnostics (spec §8 pitfalls), not run by default: the norm-0.1 temperature, the
    # code's frozen random SSE-C bias, a dense ETF (beta = 0).
    "fedloge-etf_norm1": ["strategy.fedloge.etf_norm=1.0"],
    "fedloge-bias_random": ["strategy.fedloge.sse_c_bias='random_frozen'"],
    "fedloge-dense_etf": ["strategy.fedloge.beta=0.0"],
}
MAIN = ["fedloge", "fedloge-norm1", "fedavg", "fedper", "fedbabu"]
DEFAULT_METHODS = ["fedloge", "fedavg", "fedper", "fedbabu"]  # fedloge-norm1 on request
# Metrics of the diagnostics table (FedLoGe's; the baselines' plain global/personalized).
DIAGNOSTIC = [("generic GLA-FR", "global_accuracy_glafr"), ("generic SSE-C", "global_accuracy_ssec"),
              ("generic psi", "global_accuracy"), ("tail, GLA-FR", "global_accuracy_glafr_tail"),
              ("personalized GLA-FR", "personalized_accuracy_glafr")]
# (label, metric of FedLoGe, metric of the baselines): FedLoGe's headline heads are
# GLA-FR's; its SSE-C and unrealigned heads are shown too.
ROWS = [
    ("generic", "global_accuracy_glafr", "global_accuracy"),
    ("generic, SSE-C head", "global_accuracy_ssec", None),
    ("generic, psi before GLA-FR", "global_accuracy", None),
    ("personalized", "personalized_accuracy_glafr", "personalized_accuracy"),
    ("personalized, psi + phi before GLA-FR", "personalized_accuracy", None),
]
GROUPS = ("", "_head", "_middle", "_tail")
REFERENCE = ("Spec §6/§9 (authors' logs, CIFAR-10-LT, not this data): SSE-C generic ≈ FedAvg at IF 100 and "
             "+1.5 points at IF 50 (alpha 0.5); personalized +3.3 points over FedAvg (alpha 0.5, IF 50). "
             "Expected here: generic +1 to +4 points over FedAvg from GLA-FR, mostly on the tail; "
             "personalized +3 to +6 over FedAvg, within about ±2 of FedPer.")


READING = (
    "Reading. With the paper's defaults (SSE-C column norm 0.1) FedLoGe's backbone, trained only through "
    "SSE-C, learns worse features than FedAvg's on this MLP: every generic head (SSE-C, psi, GLA-FR) and "
    "the personalized model fall below FedAvg. The diagnostics isolate the cause: the norm is a logit "
    "temperature (logits = 0.1 |z| cos), and with norm 1.0 the same round-100 run gains 7-11 points "
    "on the generic heads and 4 on the personalized model, while the code's frozen random SSE-C bias changes nothing and a dense ETF (beta = 0) "
    "makes SSE-C worse. `fedloge-norm1` is FedLoGe with that one change (chosen from one diagnostic run, "
    "not a search): its tail classes gain over FedAvg, its personalized accuracy is level with FedPer's "
    "and above FedAvg's, and its overall generic accuracy stays within the seed spread of FedAvg's. "
    "Best-round accuracy (the maximum over rounds; in MLflow) is 1-2 points above the last round for "
    "every method (4 for the default FedLoGe's noisy generic head) and leaves the order as it is. "
    "FedBABU fine-tunes the head of all 40 clients at every round's evaluation (about 37 min per run on "
    "this machine), so it has one seed.")

STATUS = """> **Status (issue 13, open).** The tables below were made before the Fashion-MNIST-LT scenario
> files got the spec's augmentation (RandomCrop(28, pad 2): `client.translate_pixels = 2`, every
> method alike); to rerun them as they were, add `--set client.translate_pixels=0`. The judgement
> in the regime of the paper's claim (a BatchNorm backbone, a longer budget, IF 100 and IF 50,
> SSE-C norm 0.1 beside the norm the diagnostics favour, 3 seeds) is not made yet; until then this
> page says what FedLoGe does on a BN-free MLP without augmentation, and no more."""


def last(uri: str, run, metric: str) -> float:
    values = history(uri, run.info.run_id, metric)
    return values[max(values)] if values else float("nan")


def at(uri: str, run, metric: str, step: int) -> float:
    return history(uri, run.info.run_id, metric).get(step, float("nan"))


def diagnostics(uri: str, runs: dict) -> list[str]:
    """Pitfall runs (shorter, fewer seeds) beside FedLoGe and FedAvg at the same round
    and seeds: runs are deterministic, so a 200-round run at round R is where an
    R-round run of the same config ends."""
    extra = [m for m in METHODS if m not in MAIN and m in runs]
    if not extra:
        return []
    step = min(int(r.data.params["rounds"]) for m in extra for r in runs[m])
    seeds = {r.data.tags["seed"] for m in extra for r in runs[m]}
    lines = ["", f"Diagnostics at round {step}, seeds {sorted(seeds)} (overall accuracy; FedAvg: its global "
             "and personalized model):", "",
             "| method | " + " | ".join(label for label, _ in DIAGNOSTIC) + " |", "|---|" + "---|" * len(DIAGNOSTIC)]
    for method in ["fedloge", "fedavg", *extra]:
        chosen = [r for r in runs.get(method, []) if r.data.tags["seed"] in seeds]
        if not chosen:
            continue
        cells = []
        for _, metric in DIAGNOSTIC:
            if method == "fedavg":
                metric = "personalized_accuracy" if metric.startswith("personalized") else \
                    "global_accuracy_tail" if metric.endswith("tail") else "global_accuracy"
            cells.append(mean_std([at(uri, r, metric, step) for r in chosen]))
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=DEFAULT_METHODS, choices=list(METHODS))
    parser.add_argument("--set", action="append", default=[], help="extra overrides for every run")
    add_common_arguments(parser, "fedloge")
    args = parser.parse_args()
    quiet_logs()

    if not args.summarize_only:
        for method in args.methods:
            run_labelled(SCENARIO, method, [*METHODS[method], *args.set], args.seeds, args.rounds, args.tracking_uri,
                         args.experiment)
    runs = finished_runs(args.tracking_uri, args.experiment, LABEL)
    head = ["method", "n"] + [f"{label}{g.replace('_', ' ')}" for label, *_ in ROWS[:1] for g in GROUPS] \
        + [f"{label}{g.replace('_', ' ')}" for label, *_ in ROWS[3:4] for g in GROUPS]
    lines = ["# FedLoGe on Fashion-MNIST-LT: results", "", STATUS, "",
             "Written by `bench/fedloge_results.py` from the runs in its MLflow experiment. Rerun: "
             "`.venv/bin/python bench/fedloge_results.py` (FedLoGe and the baselines, seeds 0 1 2), "
             "`... --methods fedloge-norm1`, and the diagnostics `... --methods fedloge-etf_norm1 "
             "fedloge-bias_random fedloge-dense_etf --seeds 0 --rounds 100`.", "",
             f"Scenario `sims/fedloge_fmnist_lt.toml` (IF 100, Dirichlet 0.5, 40 clients, 12 a round, 200 rounds); "
             f"seeds {sorted({r.data.tags['seed'] for m in MAIN for r in runs.get(m, [])})}. Accuracy in %, last round, mean ± std over seeds. FedLoGe's generic = GLA-FR's "
             "realigned psi; personalized = GLA-FR's psi^ + phi_k (no test-time mask). Baselines: the global "
             "model (generic) and each client's model (personalized).", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method in [m for m in MAIN if m in runs]:
        chosen = runs[method]
        cells = [method, str(len(chosen))]
        for label, ours, theirs in (ROWS[0], ROWS[3]):
            metric = ours if method.startswith("fedloge") else theirs
            if method == "fedper" and label == "generic":  # its heads never leave the clients
                cells += ["–"] * len(GROUPS)
                continue
            cells += [mean_std([last(args.tracking_uri, r, metric + g) for r in chosen]) for g in GROUPS]
        lines.append("| " + " | ".join(cells) + " |")
    for method in [m for m in MAIN if m.startswith("fedloge") and m in runs]:
        lines += ["", f"{method}: every head (overall accuracy, last round):", ""]
        for label, metric, _ in ROWS:
            lines.append(f"- {label}: {mean_std([last(args.tracking_uri, r, metric) for r in runs[method]])}")
    lines += diagnostics(args.tracking_uri, runs)
    lines += ["", READING, "", REFERENCE]
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    if runs:
        png = output.with_name("fedloge.png")
        compare(args.experiment, args.tracking_uri, png, group_by=(LABEL,),
                metrics=("global_accuracy", "personalized_accuracy"))
        lines += ["", f"![curves]({png.name})"]
    output.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
