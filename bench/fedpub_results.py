"""FED-PUB against its baselines on Cora (a results script, not a test).

Runs every method on each setting with several seeds through flowerbed's simulation,
logs them all to one MLflow experiment, and writes ``docs/results/fedpub.md``: the
client-mean local test accuracy after local training (FED-PUB's protocol, spec §5) at
the last round and at the round of best client-mean validation accuracy, mean ± std
over seeds, beside the authors' notebook numbers, plus the compare PNG.

    .venv/bin/python bench/fedpub_results.py                       # both settings, 3 seeds
    .venv/bin/python bench/fedpub_results.py --settings disjoint10 --seeds 0 --rounds 20   # quick look
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from results_common import LABEL, REPO, add_common_arguments, label_of, run_labelled

from flowerbed.server.cli import quiet_logs
from flowerbed.server.compare import compare

SETTINGS = {
    "disjoint10": REPO / "sims" / "fedpub_cora_disjoint10.toml",
    "overlap30": REPO / "sims" / "fedpub_cora_overlap30.toml",
}
# method -> `--set` overrides of the scenario file (whose strategy is FED-PUB with its tau).
METHODS = {
    # The library default (decoupled L1, lambda1 = 0.375): its runs are those of the
    # fedpub_decoupled_0.375 row (same resolved config, so not run twice).
    "fedpub": [],
    "fedpub_code_noop": ["strategy.fedpub.regularizers='code_noop'"],
    # Ablation: the paper's proximal term without the mask L1.
    "fedpub_no_l1": ["strategy.fedpub.mask_l1=0.0"],
    # The lambda1 sweep: the L1 in the loss (the paper's form) and as a proximal step after
    # each Adam step (decoupled; it prunes only where lr * lambda1 * steps nears 1).
    **{f"fedpub_loss_{v}": ["strategy.fedpub.mask_l1_form='loss'", f"strategy.fedpub.mask_l1={v}"]
       for v in ("1e-3", "1e-4", "1e-5")},
    **{f"fedpub_decoupled_{v}": ["strategy.fedpub.mask_l1_form='decoupled'", f"strategy.fedpub.mask_l1={v}"]
       for v in ("0.25", "0.375", "0.5", "1")},
    "fedavg": ["strategy.name='fedavg'", "model.name='gcn'"],
    "fedprox": ["strategy.name='fedprox'", "strategy.fedprox.proximal_mu=0.01", "model.name='gcn'"],
    "fedper": ["strategy.name='fedper'", "model.name='gcn'"],
    "local": ["strategy.name='local'", "model.name='gcn'"],
}
# The authors' notebook (spec §6.1): Acc @ round 100 and @ best validation, Cora.
PAPER = {
    ("disjoint10", "fedavg"): "68.80 / 68.80",
    ("disjoint10", "fedpub_code_noop"): "81.44 / 81.19",
    ("overlap30", "fedavg"): "54.44 / 54.44",
    ("overlap30", "fedpub_code_noop"): "75.79 / 75.70",
}
# Paper Table 1 (unverified in the spec), Cora disjoint 10 clients.
PAPER_TABLE = {("disjoint10", "local"): "≈ 79.94", ("disjoint10", "fedper"): "≈ 79.35",
               ("disjoint10", "fedpub_decoupled_0.375"): "≈ 81.54 (FED-PUB)"}


DEFAULT = "fedpub_decoupled_0.375"
IN_ONE_LINE = (
    "**In one line.** With the default regulariser (the mask L1 as a soft-threshold after each Adam step, "
    "lambda1 = 0.375) FED-PUB keeps the official code's accuracy on Cora (within the seed spread on both "
    "settings) while pruning about half of its mask entries; the paper's L1 in the loss (lambda1 = 1e-3) "
    "makes every client's masks alike, the similarity weights uniform, and FED-PUB falls to FedAvg's accuracy.")

# Rows of the same script's earlier runs (before issue 13; their database is gone), for the
# methods not rerun since; the rows rerun since (disjoint-10: fedpub_code_noop, the then-default
# = fedpub_loss_1e-3, fedavg, local; overlap-30: fedpub_code_noop) came out the same to the printed digit.
EARLIER = """## Earlier runs, not rerun

From the same script before issue 13 (3 seeds; FED-PUB's default then was `fedpub_loss_1e-3`).
Rerun them with `--settings overlap30 --methods fedpub_loss_1e-3 fedavg fedper local` (about
15 min a run here) and `--settings disjoint10 --methods fedper fedprox`.

| setting | method | n | last round | best-val round | mask sparsity |
|---|---|---|---|---|---|
| disjoint10 | fedprox | 3 | 66.05 ± 7.77 | 66.56 ± 7.44 | – |
| disjoint10 | fedper | 3 | 77.78 ± 1.72 | 77.99 ± 1.60 | – |
| overlap30 | fedpub_loss_1e-3 | 3 | 61.43 ± 5.29 | 64.38 ± 5.80 | 82.9% |
| overlap30 | fedavg | 3 | 51.69 ± 3.89 | 53.78 ± 0.73 | – |
| overlap30 | fedper | 3 | 75.92 ± 1.46 | 75.91 ± 1.44 | – |
| overlap30 | local | 3 | 74.12 ± 2.17 | 75.39 ± 2.24 | – |
"""

NOTES = """## Reading the table

- Rows: `fedpub_code_noop` computes the regularisers on detached tensors as the official code does
  (the notebook numbers come from that code: no sparsity, no proximal term); `fedpub_loss_<lambda1>`
  puts the mask L1 in the loss as the paper writes it (the library default before issue 13, at
  1e-3); `fedpub_decoupled_<lambda1>` applies it as a soft-threshold by lr * lambda1 after each Adam
  step (the proximal step of the same objective, as AdamW decouples weight decay); the default is
  marked. `fedpub_no_l1` (lambda1 = 0) equals `fedpub_code_noop` run for run (see below).
- Mechanism, measured: under Adam the L1 in the loss moves every mask entry whose cross-entropy
  gradient is much weaker than lambda1 by lr a step, the same path 1 - lr * t on every client
  (`tests/test_fedpub.py::test_l1_in_the_loss_moves_silent_masks_by_lr_whatever_lambda1_is`). At
  lambda1 = 1e-3 that is nearly every entry: the clients' functional embeddings become alike
  (similarity column: 0.95 against 0.80 for the code's no-op), alpha's self-weight falls towards
  1/K = 0.1 (FedAvg), and accuracy stops near FedAvg's. An earlier version of this page blamed
  pruning; pruning comes late (an entry on that path crosses the 1e-3 threshold after 100 steps,
  the last round), the collapse early (alpha self 0.134 and similarity 0.888 by round 10 in
  `test_default_mask_l1_keeps_the_masks_personal_on_cora`'s setting). At lambda1 = 1e-5 few entries
  are that silent: accurate, but nothing is pruned.
- The decoupled form leaves Adam the cross-entropy alone, so masks stay each client's own (alpha
  self and similarity as without L1) and only entries without a cross-entropy signal decay, by
  lr * lambda1 a step: with one step a round, lambda1 sets how much is pruned after 100 rounds
  (0.25: almost nothing; 0.375: about half; 0.5: about 60%, a point lower at the last round;
  1.0: 82%, 6 points lower). The decoupled form at the paper's lambda1 sizes (1e-3 to 1e-5) would
  move a mask by at most 1e-3 in 100 steps and prune nothing: not run. Not run either: the loss
  form at 1e-4.
- Default chosen by the rule of issue 13: at least 30% of mask entries pruned at the last round
  and accuracy within the seed spread of `fedpub_code_noop`; lambda1 = 0.5 prunes more but its
  last-round mean on disjoint-10 is outside the code's spread. lambda1 is tied to lr and rounds:
  with other budgets, scale it by 100 rounds x 0.01 / (rounds x local steps x lr).
- With one full-batch step per round, a proximal term towards the received weights has zero
  gradient at that step (the weights start at the anchor): FedProx equals FedAvg and
  `fedpub_no_l1` equals `fedpub_code_noop`, run for run.
- Every method keeps each client's Adam state across rounds (`client.keep_optimizer`), as the
  official code does; FedAvg's last-round accuracy swings with the seed (one local step from the
  global model), hence its large std.
"""


def accuracies(uri: str, run_id: str) -> tuple[float, ...]:
    """(last-round, best-validation-round) client-mean test accuracy after local training,
    and at the last round the share of pruned mask entries, the mean self-weight in
    alpha and the mean cross-client similarity (NaN where not logged)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    test = {m.step: m.value for m in client.get_metric_history(run_id, "personalized_accuracy_trained")}
    val = {m.step: m.value for m in client.get_metric_history(run_id, "personalized_val_accuracy_trained")}
    sparsity = {m.step: m.value for m in client.get_metric_history(run_id, "personalized_mask_sparsity")}
    best = max(val, key=lambda step: (val[step], -step))

    def last(metric: str) -> float:
        found = {m.step: m.value for m in client.get_metric_history(run_id, metric)}
        return found[max(found)] if found else float("nan")

    return (test[max(test)], test[best], last("personalized_mask_sparsity"), last("fedpub_alpha_self"),
            last("fedpub_similarity_other"))


def collect(uri: str, experiment: str, settings: list[str]) -> dict[tuple[str, str], list[tuple[float, ...]]]:
    """(setting, method) -> [(last, best-val)] of every finished run, in method order."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    found: dict[tuple[str, str], list[tuple[float, ...]]] = {}
    for setting in settings:
        exp = client.get_experiment_by_name(f"{experiment}_{setting}")
        if exp is None:
            continue
        runs = client.search_runs([exp.experiment_id], "attributes.status = 'FINISHED'")
        for run in sorted(runs, key=lambda r: r.info.start_time):
            if label_of(run) in METHODS:
                found.setdefault((setting, label_of(run)), []).append(accuracies(uri, run.info.run_id))
    order = {m: i for i, m in enumerate(METHODS)}
    return dict(sorted(found.items(), key=lambda kv: (settings.index(kv[0][0]), order[kv[0][1]])))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--overlap-methods", nargs="+", choices=list(METHODS),
                        help="methods for overlap30 if different (its runs cost about 3x)")
    add_common_arguments(parser, "fedpub")
    parser.add_argument("--runs-command", help="with --summarize-only: the command that made the runs")
    args = parser.parse_args()
    quiet_logs()

    if not args.summarize_only:
        for setting in args.settings:
            methods = args.overlap_methods if setting == "overlap30" and args.overlap_methods else args.methods
            for method in methods:
                run_labelled(SETTINGS[setting], method, METHODS[method], args.seeds, args.rounds, args.tracking_uri,
                             f"{args.experiment}_{setting}", {"setting": setting})
    results = collect(args.tracking_uri, args.experiment, args.settings)

    lines = ["# FED-PUB on Cora: results", "", IN_ONE_LINE, "",
             f"Command: `.venv/bin/python bench/fedpub_results.py {' '.join(sys.argv[1:])}`".rstrip(),
             *([f"Runs made by: `{args.runs_command}`"] if args.runs_command else []),
             f"Runs per row: see `n`; seeds {args.seeds}; scenario files `sims/fedpub_cora_disjoint10.toml`, "
             "`sims/fedpub_cora_overlap30.toml`" + (f"; rounds {args.rounds}" if args.rounds else "") + ".",
             "Metric: client-mean accuracy on each client's own test nodes after local training "
             "(FED-PUB's protocol), in %, mean ± std over seeds; at the last round / at the round of "
             "best client-mean validation accuracy.", "",
             "Last round also: mask sparsity (share of mask entries below the prune threshold), alpha's mean "
             "self-weight (1/K = uniform = FedAvg) and the mean cross-client similarity of the functional "
             "embeddings.", "",
             "| setting | method | n | last round | best-val round | mask sparsity | alpha self | similarity "
             "| authors' notebook (last / best val) | paper Table 1 |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for (setting, method), values in results.items():
        arr = 100 * np.array(values)
        std = arr.std(axis=0, ddof=1) if len(arr) > 1 else np.zeros(arr.shape[1])

        def shown(column: int, unit: str = "", scale: float = 1.0) -> str:
            values = arr[:, column] if column < arr.shape[1] else np.array([np.nan])
            return "–" if np.isnan(values).all() else f"{np.nanmean(values) * scale:.{1 if unit else 3}f}{unit}"

        shown_method = f"{method} (default)" if method == DEFAULT else method
        lines.append(f"| {setting} | {shown_method} | {len(arr)} | {arr[:, 0].mean():.2f} ± {std[0]:.2f} | "
                     f"{arr[:, 1].mean():.2f} ± {std[1]:.2f} | {shown(2, '%')} | {shown(3, scale=0.01)} | "
                     f"{shown(4, scale=0.01)} | {PAPER.get((setting, method), '')} | "
                     f"{PAPER_TABLE.get((setting, method), '')} |")
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    for setting in sorted({setting for setting, _ in results}, key=args.settings.index):
        png = output.with_name(f"fedpub_{setting}.png")
        compare(f"{args.experiment}_{setting}", args.tracking_uri, png, group_by=(LABEL,),
                metrics=("personalized_accuracy_trained", "personalized_val_accuracy_trained"))
        lines += ["", f"![{setting}]({png.name})"]
    lines += ["", EARLIER, NOTES]
    output.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
