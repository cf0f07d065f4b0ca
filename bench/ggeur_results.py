"""GGEUR against FedAvg, FedProx, its ablations, local-only and a centralized ceiling
(a results script, not a test).

Scenarios (spec ggeur.md §9): Office-Caltech-10-LDS on SURF features (4 domain clients,
alpha 0.1 and 0.5; metric: mean of the per-domain test accuracies of the global head)
and Fashion-MNIST through the frozen EfficientNet-Lite0 encoder (10 clients, beta 0.05;
metric: global head on the 10k test embeddings). Every run goes to one MLflow
experiment, tagged ``scenario`` and ``method``; ``docs/results/ggeur.md`` gets last- and
best-round accuracy (mean ± std over seeds) and one compare plot per scenario.

    .venv/bin/python bench/ggeur_results.py                              # everything, 3 seeds
    .venv/bin/python bench/ggeur_results.py --scenarios oc_a0.1 --seeds 0 --rounds 5
    .venv/bin/python bench/ggeur_results.py --summarize-only
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from mlflow.tracking import MlflowClient
from results_common import (LABEL, REPO, add_common_arguments, finished_runs, last_and_best, mean_std, run_labelled,
                            write_page)

from flowerbed.client.trainer import TrainSettings, make_optimizer, train_local
from flowerbed.server.cli import quiet_logs
from flowerbed.server.compare import compare
from flowerbed.server.tracking import KIND_TAG, RunTracker
from flowerbed.sims.config import load_scenario
from flowerbed.sims.partitions import scenario_partition
from flowerbed.sims.scoring import domain_accuracies, predict, score
from flowerbed.sims.task import client_data, new_model, test_data
from flowerbed.strategies import resolve_strategy

OC, FMNIST = REPO / "sims" / "ggeur_officecaltech_lds.toml", REPO / "sims" / "ggeur_fmnist_effnet.toml"
ANISO = REPO / "sims" / "ggeur_anisotropic.toml"
# name -> (scenario file, overrides, headline metric)
SCENARIOS = {
    "oc_a0.1": (OC, ["partition.alpha=0.1"], "global_accuracy_domain_mean"),
    "oc_a0.5": (OC, ["partition.alpha=0.5"], "global_accuracy_domain_mean"),
    "fmnist_b0.05": (FMNIST, ["partition.alpha=0.05"], "global_accuracy"),
    "fmnist_b0.1": (FMNIST, ["partition.alpha=0.1"], "global_accuracy"),
    "fmnist_b0.5": (FMNIST, ["partition.alpha=0.5"], "global_accuracy"),
    # The positive control: a shared, strongly anisotropic class covariance (synthetic).
    "aniso_a0.1": (ANISO, ["partition.alpha=0.1"], "global_accuracy"),
    "aniso_a0.5": (ANISO, ["partition.alpha=0.5"], "global_accuracy"),
}
DEFAULT_SCENARIOS = ["oc_a0.1", "oc_a0.5", "fmnist_b0.05"]
# Also summarized when present (fewer methods were run on it).
EXTRA_SUMMARY = ["fmnist_b0.1", "aniso_a0.1", "aniso_a0.5"]
METHODS = {
    "fedavg": [],
    "fedavg+ggeur": ["strategy.name='fedavg+ggeur'"],
    "fedavg+isotropic": ["strategy.name='fedavg+ggeur'", "strategy.ggeur.augment='isotropic'"],
    "fedavg+resample": ["strategy.name='fedavg+ggeur'", "strategy.ggeur.augment='resample'"],
    "local": ["strategy.name='local'"],
    "centralized": None,  # trained here on the pooled kept data, no federation
    "fedprox": ["strategy.name='fedprox'"],
    "fedprox+ggeur": ["strategy.name='fedprox+ggeur'"],
    # The paper's formula; the official training loop.
    "fedavg+ggeur-lambda": ["strategy.name='fedavg+ggeur'", "strategy.ggeur.noise_scale='eigenvalue'"],
    "fedavg+ggeur-codeloop": ["strategy.name='fedavg+ggeur'", "strategy.ggeur.loop='code'"],
    # The noise-scale sweep: the noise's std times k, for the geometry and isotropic noise.
    **{f"fedavg+{kind}-x{k}": ["strategy.name='fedavg+ggeur'", f"strategy.ggeur.augment='{augment}'",
                               f"strategy.ggeur.noise_multiplier={k}"]
       for kind, augment in (("ggeur", "geometry"), ("isotropic", "isotropic")) for k in ("0.5", "2")},
}
DEFAULT_METHODS = list(METHODS)[:8]


def centralized(path: Path, overrides: list[str], seed: int, rounds: int | None, uri: str, experiment: str,
                tags: dict[str, str]) -> None:
    """The ceiling: the scenario's model trained on the union of the clients' kept
    training rows for rounds x local_epochs epochs, scored like the global model."""
    scenario = load_scenario(path, [*overrides, f"seed={seed}", f"mlflow.tracking_uri='{uri}'",
                                    f"mlflow.experiment='{experiment}'", *([f"rounds={rounds}"] if rounds else [])])
    clients = range(scenario.partition.num_clients)
    x = torch.cat([client_data(scenario, k).x_train for k in clients])
    y = torch.cat([client_data(scenario, k).y_train for k in clients])
    test = test_data(scenario)
    domains = {d: torch.from_numpy(rows) for d, rows in scenario_partition(scenario).domain_tests().items()}
    model = new_model(scenario)
    settings = TrainSettings.from_scenario(scenario.client)
    optimizer = make_optimizer(model.parameters(), settings)
    generator = torch.Generator().manual_seed(seed)
    tracker = RunTracker(scenario, resolve_strategy(scenario), progress=None, tags=tags)
    with tracker.active():
        MlflowClient(uri).set_tag(tracker.run_id, KIND_TAG, "centralized")
        for step in range(scenario.rounds + 1):
            if step:  # one "round" = local_epochs epochs over the pooled data, one optimizer
                train_local(model, x, y, settings, generator, optimizer)
            loss, accuracy = score(model, test)
            metrics = {"global_accuracy": accuracy, "global_loss": loss}
            if len(domains) > 1:
                split = domain_accuracies(predict(model, test.x_test), test.y_test, domains)
                metrics.update({f"global_accuracy_{d}": a for d, a in split.items()})
            tracker.log_round(step, metrics)
    print(f"{' '.join(tags.values())} seed {seed}: centralized", flush=True)


IN_ONE_LINE = (
    "**In one line.** Reproduced: GGEUR's gain over FedAvg under label skew (Office-Caltech-LDS α = 0.1: "
    '+23.1 points), and, on a synthetic positive control whose classes share one anisotropic covariance, '
    'that the geometry itself is what helps (α = 0.5: 95.4 against 91.8 for resampling and 60.5 for '
    'isotropic noise). Not reproduced: the geometry mattering on the real data (on Office-Caltech '
    'isotropic noise, plain resampling and any noise scale from 0 to 2x do as well; on Fashion-MNIST '
    "embeddings GGEUR stays inside FedAvg's seed spread). The default a user gets: the paper's method "
    "with the official code's N(x, Σ_c) noise and correct FedAvg.")

CONTROL = (
    'Positive control (`aniso_*`, `sims/ggeur_anisotropic.toml`, synthetic: 10 classes sharing one '
    'covariance with 8 nuisance directions of std 3 and 56 quiet ones of std 0.3 where the class means '
    'lie; 20 training samples per class over 10 clients). Here the geometry carries the answer, and GGEUR '
    'uses it: with the same per-class targets it beats resampling the anchors (α = 0.5: 95.43 ± 1.31 '
    'against 91.79 ± 1.24; α = 0.1: 81.58 ± 2.33 against 66.27 ± 6.79) and isotropic noise of the same '
    'total variance, which swamps the quiet directions (60.49 ± 3.66; 43.97 ± 4.65). The gain over FedAvg '
    'also counts the larger local sets; the ablations are the controlled comparison. Noise scale on '
    "Office-Caltech α = 0.1 (`-x0.5`, `-x2`: the noise's std times 0.5 or 2; times 0 is `resample`): "
    'geometry 51.23 (x0) / 51.89 (x0.5) / 51.77 (x1) / 49.74 (x2), isotropic 52.48 (x0.5) / 52.21 (x1) / '
    "52.33 (x2), all within about one seed spread (2.3-4.6): on that data the noise's shape and size do "
    'not matter.')

READING = (
    "Reading. On Office-Caltech-LDS, GGEUR lifts FedAvg far above its level (with FedAvg or FedProx, with "
    "the paper's figure's λ-form as well), to the centralized ceiling or above it. The ablations with the same "
    "per-class targets reach the same accuracy or more: isotropic noise of equal total variance and "
    "even duplication without noise. On this data the gain comes from what GGEUR's multi-domain rule "
    "does besides the geometry (every client gets every class, around the other domains' prototypes, in "
    "balanced amounts), not from the shape of the global covariance. On Fashion-MNIST embeddings "
    "GGEUR stays inside FedAvg's seed spread (β = 0.05 and 0.1; the spec's one-seed reference at β = 0.1 "
    "had it 3 points up), isotropic noise does at least as well, and at β = 0.05 FedProx alone gains as "
    "much, with nothing added by GGEUR on top of it. The "
    "official training loop (`loop = \"code\"`: private models, unweighted mean, CE on softmax outputs) "
    "scores higher than correct FedAvg on Office-Caltech; the default stays the paper's method.")


def summarize(args: argparse.Namespace) -> str:
    uri, experiment = args.tracking_uri, args.experiment
    lines = ["# GGEUR: results", "", IN_ONE_LINE, "",
             "Written by `bench/ggeur_results.py` from the runs in its MLflow experiment; each table says the "
             "command that reruns it. Accuracy in %, mean ± std over seeds; *last* = last round (primary), *best* = best round "
             "(what the official scripts print). Δ = last-round gain over FedAvg. GGEUR defaults: the paper's "
             "method with the official code's noise (`noise_scale = sqrt_eigenvalue`, i.e. N(x, Σ_c); the paper's "
             "figure scales by λ, `fedavg+ggeur-lambda`), all clients pooled, all eigenpairs, with correct FedAvg (re-synced, sample-weighted). Ablations use the same per-class targets: "
             "*isotropic* = noise N(0, trace(Σ_c)/d · I); *resample* = the same anchors, no noise.", ""]
    for name in [*args.scenarios, *(n for n in EXTRA_SUMMARY if n not in args.scenarios)]:
        # (Runs made before the "setting" tag carried it as "scenario".)
        runs = {m: [r for r in rs if r.data.tags.get("setting", r.data.tags.get("scenario")) == name]
                for m, rs in finished_runs(uri, experiment, LABEL).items()}
        runs = {m: rs for m, rs in runs.items() if rs}
        if not runs:
            continue
        path, overrides, metric = SCENARIOS[name]
        seeds = sorted({int(r.data.tags.get("seed", -1)) for rs in runs.values() for r in rs})
        rerun = (f".venv/bin/python bench/ggeur_results.py --scenarios {name} --seeds {' '.join(map(str, seeds))} "
                 f"--methods {' '.join(m for m in METHODS if m in runs)}")
        lines += [f"## {name}: `{path.name}` with `{' '.join(overrides)}` (metric `{metric}`)", "",
                  f"Rerun: `{rerun}`", "",
                  "| method | seeds | last | best | Δ last vs FedAvg |", "|---|---|---|---|---|"]
        base = np.nanmean(last_and_best(uri, runs["fedavg"], metric)[0]) if "fedavg" in runs else float("nan")
        for method in [m for m in METHODS if m in runs]:
            use = "personalized_accuracy" if method == "local" else metric
            last, best = last_and_best(uri, runs[method], use)
            # Local-only's figure is on other test rows unless each client tests on its whole domain.
            comparable = method != "fedavg" and (method != "local" or metric.endswith("domain_mean"))
            delta = f"{100 * (np.nanmean(last) - base):+.2f}" if comparable else "–"
            label = method + (" ¹" if method == "local" else "")
            lines.append(f"| {label} | {len(last)} | {mean_std(last)} | {mean_std(best)} | {delta} |")
        png = Path(args.output).with_name(f"ggeur_{name.replace('.', '')}.png")
        # Local-only has no global model to plot (the server's average is never trained).
        compare(experiment, uri, png, group_by=(LABEL,), metrics=(metric,),
                where=f"tags.setting = '{name}' and tags.{LABEL} != 'local'")
        lines += ["", f"![{name}]({png.name})", ""]
    lines += [READING, "", CONTROL, "", "¹ local-only: each client's own model on its own test split (Office-Caltech: its domain's "
              "whole test split, so comparable; Fashion-MNIST: a label-matched local split, which flatters it).",
              "", "Reference (spec §9, a minimal re-implementation, Office-Caltech α = 0.1, 3 seeds, last round): "
              "FedAvg 32.9, FedAvg+GGEUR 51.2, isotropic 51.2, centralized 49.8, local-only 26.9; α = 0.5: "
              "41.6 / 55.8 / 57.2 / 54.8 / 35.6. Fashion-MNIST β = 0.1 (1 seed): FedAvg 75.2, GGEUR 78.5, "
              "isotropic 79.6, resample 76.4, centralized 83.1."]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", nargs="+", default=DEFAULT_SCENARIOS, choices=list(SCENARIOS))
    parser.add_argument("--methods", nargs="+", default=DEFAULT_METHODS, choices=list(METHODS))
    add_common_arguments(parser, "ggeur")
    args = parser.parse_args()
    quiet_logs()

    if not args.summarize_only:
        for name in args.scenarios:
            path, overrides, _ = SCENARIOS[name]
            for method in args.methods:
                if METHODS[method] is None:
                    for seed in args.seeds:
                        centralized(path, overrides, seed, args.rounds, args.tracking_uri, args.experiment,
                                    {"setting": name, LABEL: method})
                else:
                    run_labelled(path, method, [*overrides, *METHODS[method]], args.seeds, args.rounds,
                                 args.tracking_uri, args.experiment, {"setting": name})
    write_page(args.output, summarize(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
