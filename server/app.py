"""The ServerApp: a registry strategy driven by Flower's own round loop, logged to MLflow.

``strategy.start`` runs the rounds; flowerbed adds around it a roster of the nodes
(:class:`~flowerbed.server.grid.RosterGrid`), server-side evaluation of the global
model on the balanced test set, and one MLflow run with every round's metrics.
The same app runs under the Simulation Engine and over gRPC.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TextIO

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp

from flowerbed.server.checkpoint import (CHECKPOINT_TAG, Checkpointing, continue_from, rng_state,
                                         save_server_checkpoint, set_rng_state)
from flowerbed.server.contract import install_measurement_averaging
from flowerbed.server.grid import RosterGrid, Traffic
from flowerbed.server.policy import SkippedRounds, skip_thin_rounds
from flowerbed.server.tracking import RunTracker
from flowerbed.sims.config import Scenario
from flowerbed.sims.run_config import read_run_config
from flowerbed.sims.partitions import scenario_partition
from flowerbed.sims.scoring import domain_accuracies, group_accuracies, score, score_many
from flowerbed.sims.task import new_model, test_data
from flowerbed.strategies import ResolvedStrategy, resolve_strategy
from flowerbed.strategies.contract import ServerHooks, hooks_of

@dataclass
class RunSummary:
    """What a finished run logged: the MLflow run and every round's metrics."""

    run_id: str
    history: dict[int, dict[str, float]]
    # round -> message type -> partition id -> that client's reply metrics
    client_metrics: dict[int, dict[str, dict[int, dict[str, float]]]] = field(default_factory=dict)
    # round -> the JSON artifact the strategy reported (a matrix, say)
    strategy_reports: dict[int, dict] = field(default_factory=dict)


def build_strategy(scenario: Scenario, resolved: ResolvedStrategy):  # -> flwr Strategy
    """The scenario's strategy (with its add-ons) built for Flower's loop."""
    sampling = scenario.sampling
    return resolved.build(
        seed=scenario.seed,
        fraction_train=sampling.fraction_train,
        fraction_evaluate=sampling.fraction_evaluate,
        min_train_nodes=sampling.min_clients,
        min_evaluate_nodes=sampling.min_clients,
        # Every partition by default; deployments may go on with fewer (sampling.min_available_clients).
        min_available_nodes=sampling.available_needed(scenario.partition.num_clients),
    )


def _mean(values: list[float], weights: list[float] | None = None) -> float:
    return float(np.average(values, weights=weights))


def client_round_metrics(traffic: Traffic) -> dict[str, float]:
    """Round metrics from the clients' replies: losses, personalized accuracies, counts."""
    # Counted per message type: train without a suffix, evaluate with one.
    out: dict[str, float] = {
        "clients_ok": traffic.ok.get("train", 0),
        "clients_failed": traffic.failed.get("train", 0),
        "clients_rejected": len(traffic.rejected.get("train", {})),
        "bytes_sent": traffic.bytes_sent,
        "bytes_received": traffic.bytes_received,
    }
    trained = [m for m in traffic.metrics.get("train", {}).values() if "train_loss" in m]
    if trained:
        out["train_loss"] = _mean([m["train_loss"] for m in trained], [m["num-examples"] for m in trained])
        # The device each client trained on (its reply's on-gpu): how many used a GPU.
        out["clients_on_gpu"] = float(sum(int(m.get("on-gpu", 0)) for m in trained))
    tested = [m for m in trained if m.get("num-test", 0) > 0]
    if tested:  # graph clients score their model after local training (the graph protocol)
        out["personalized_accuracy_trained"] = _mean([m["test_accuracy"] for m in tested])
        out["personalized_accuracy_trained_weighted"] = _mean([m["test_accuracy"] for m in tested],
                                                              [m["num-test"] for m in tested])
        validated = [m for m in tested if m.get("num-val", 0) > 0]
        if validated:
            out["personalized_val_accuracy_trained"] = _mean([m["val_accuracy"] for m in validated])
    out.update(_prefixed_means(trained))
    if "evaluate" in traffic.ok or "evaluate" in traffic.failed or "evaluate" in traffic.rejected:
        out.update({"clients_ok_evaluate": traffic.ok.get("evaluate", 0),
                    "clients_failed_evaluate": traffic.failed.get("evaluate", 0),
                    "clients_rejected_evaluate": len(traffic.rejected.get("evaluate", {}))})
    scored = [m for m in traffic.metrics.get("evaluate", {}).values()
              if m.get("num-examples", 0) > 0 and {"accuracy", "loss"} <= set(m)]
    if scored:
        weights = [m["num-examples"] for m in scored]
        out["personalized_accuracy"] = _mean([m["accuracy"] for m in scored])
        out["personalized_accuracy_weighted"] = _mean([m["accuracy"] for m in scored], weights)
        out["personalized_loss"] = _mean([m["loss"] for m in scored], weights)
        validated = [m for m in scored if m.get("num-val", 0) > 0]
        if validated:
            out["personalized_val_accuracy"] = _mean([m["val_accuracy"] for m in validated])
        out.update(_prefixed_means(scored))
    return out


def _prefixed_means(replies: list[dict[str, float]]) -> dict[str, float]:
    """Strategies report more per-client metrics under the prefix ``personalized_``: the
    round's value is their mean over the clients that have one (NaN: the client has no
    test sample for that metric, e.g. a class group)."""
    out = {}
    for key in sorted({k for m in replies for k in m if k.startswith("personalized_")}):
        values = [m[key] for m in replies if key in m and not math.isnan(m[key])]
        if values:
            out[key] = _mean(values)
    return out


class RunFailed(RuntimeError):
    """The run cannot go on: rounds in a row without enough usable updates, or a
    diverged model."""


def run_problem(server_round: int, metrics: dict[str, float], skipped_in_a_row: int,
                max_skipped: int) -> str | None:
    """Why a run must end FAILED after this round's ``metrics`` (logged first), or None."""
    if server_round > 0 and skipped_in_a_row >= max_skipped:
        return (f"round {server_round}: {skipped_in_a_row} round(s) in a row not applied, too few usable "
                f"updates (this one: {int(metrics.get('clients_ok', 0))} ok, "
                f"{int(metrics.get('clients_failed', 0))} failed, {int(metrics.get('clients_rejected', 0))} "
                "rejected; sampling.min_success_fraction, max_skipped_rounds); see the log and rejected/")
    for key in ("global_loss", "train_loss"):
        if key in metrics and not math.isfinite(metrics[key]):
            return (f"round {server_round}: {key} is {metrics[key]} (training diverged: "
                    "try a smaller client.lr)")
    return None


class RoundHook:
    """Flower's ``evaluate_fn``: called before round 1 and after every round.

    It scores the global model on the balanced test set, gathers the round's client
    metrics from the grid, logs the lot to MLflow at ``step = round`` and, when due,
    writes a checkpoint. A resumed run's loop counts from 1 again: the hook numbers
    its rounds on from the checkpoint's (``offset``).
    """

    def __init__(self, scenario: Scenario, grid: RosterGrid, tracker: RunTracker,
                 summary: RunSummary, strategy=None, skipped: SkippedRounds | None = None,
                 checkpointing: Checkpointing | None = None) -> None:
        self.scenario = scenario
        self.checkpointing = checkpointing
        self.offset = checkpointing.resume_round if checkpointing else 0
        self._resumed_rng: dict | None = None
        self.skipped = skipped or SkippedRounds()
        self.hooks: ServerHooks = hooks_of(strategy)
        self.grid = grid
        self.tracker = tracker
        self.summary = summary
        self.model = new_model(scenario)
        self.test = test_data(scenario)
        partition = scenario_partition(scenario)
        self.class_groups = partition.class_groups
        self.domain_tests = {d: torch.from_numpy(rows) for d, rows in partition.domain_tests().items()}
        self.domain_of = {i: c.domain for i, c in enumerate(partition.clients) if c.domain}
        self._round_start = time.perf_counter()

    def resume_from(self, checkpoint: dict) -> ArrayRecord:
        """Restore the strategy, the failure policy and the history from ``checkpoint``;
        the generators are restored when the loop starts. Returns the global arrays."""
        node_of = {partition: node for node, partition in self.grid.partition_of.items()}
        self.hooks.load_state(checkpoint["strategy"], node_of.__getitem__)
        self.skipped.in_a_row = int(checkpoint["skipped_in_a_row"])
        self.tracker.history.update(checkpoint["history"])
        self._resumed_rng = checkpoint["rng"]
        return ArrayRecord({k: Array(v) for k, v in checkpoint["arrays"].items()})

    def __call__(self, server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        server_round += self.offset
        if self.offset and server_round == self.offset:  # the checkpoint's round, logged already
            self.grid.take_traffic()  # a setup phase's, run again
            if self._resumed_rng is not None:  # last: the next draw is round offset + 1's sampling
                set_rng_state(self._resumed_rng)
            self._round_start = time.perf_counter()
            return None
        metrics: dict[str, float] = {}
        if self.scenario.sampling.evaluates(server_round, self.scenario.rounds):
            metrics.update(self._score_global(arrays))
        traffic = self.grid.take_traffic()
        if server_round == 0:  # a strategy's setup phase before round 1
            metrics.update(self.hooks.setup_report())
        if server_round > 0:
            metrics.update(client_round_metrics(traffic))
            # A round without any usable update counts as skipped whatever the fraction.
            metrics["round_applied"] = float(not self.skipped.take(metrics["clients_ok"] == 0))
            metrics.update(self._per_domain(traffic))
            metrics["round_seconds"] = time.perf_counter() - self._round_start
            self.summary.client_metrics[server_round] = traffic.metrics
            if traffic.rejected:  # which client, why
                self.tracker.log_dict({kind: {str(k): why for k, why in by.items()}
                                       for kind, by in traffic.rejected.items()},
                                      f"rejected/round_{server_round:03d}.json")
            # A strategy's own per-round metrics and matrices.
            extra, artifact = self.hooks.round_report()
            metrics.update(extra)
            if artifact:
                self.tracker.log_dict(artifact, f"strategy/round_{server_round:03d}.json")
                self.summary.strategy_reports[server_round] = artifact
        self.tracker.log_round(server_round, metrics)
        if problem := run_problem(server_round, metrics, self.skipped.in_a_row,
                                  self.scenario.sampling.max_skipped_rounds):
            raise RunFailed(problem)
        if self.checkpointing and self.checkpointing.due(server_round, self.scenario.rounds):
            self._checkpoint(server_round, arrays)
        self._round_start = time.perf_counter()
        if "global_accuracy" not in metrics:
            return None
        return MetricRecord({"accuracy": metrics["global_accuracy"], "loss": metrics["global_loss"]})

    def _checkpoint(self, server_round: int, arrays: ArrayRecord) -> None:
        """Everything the rounds after ``server_round`` need (:mod:`~flowerbed.server.checkpoint`);
        called last in the round, so the generators' state is that of the next draw."""
        partition_of = self.grid.partition_of
        state = arrays.to_torch_state_dict()  # deserialized once, for both files
        save_server_checkpoint(self.checkpointing.folder, {
            "round": server_round, "run_id": self.tracker.run_id, "scenario": self.scenario.to_dict(),
            "arrays": {k: v.numpy() for k, v in state.items()},
            "strategy": self.hooks.state(partition_of.__getitem__),
            "skipped_in_a_row": self.skipped.in_a_row, "history": self.tracker.history,
            "rng": rng_state(),
        })
        # The model so far is an artifact too: a run that stops keeps its latest model.
        self.tracker.log_arrays(state)

    def _score_global(self, arrays: ArrayRecord) -> dict[str, float]:
        """The global model (and a strategy's other generic models: other heads on the
        same body, say) on the balanced test set, overall and per class group / domain."""
        # Parameters that clients keep (a head, say) are not in the global arrays.
        self.model.load_state_dict(arrays.to_torch_state_dict(), strict=False)
        models = {"": self.model, **self.hooks.evaluation_variants(self.model)}
        scores = evaluate_global(models, self.test)
        metrics = {"global_loss": scores[""][0]}
        for name, (_, accuracy, pred) in scores.items():
            prefix = f"global_accuracy_{name}" if name else "global_accuracy"
            metrics[prefix] = accuracy
            self._score_splits(pred, prefix, metrics, domains=not name)
        return metrics

    def _per_domain(self, traffic: Traffic) -> dict[str, float]:
        """Multi-domain scenarios: the clients' personalized accuracy (each on its own
        test split) averaged per domain, ``personalized_accuracy_<domain>``; with one
        client per domain, each client's own accuracy."""
        if len(set(self.domain_of.values())) < 2:
            return {}
        by_domain: dict[str, list[float]] = {}
        for partition_id, reply in traffic.metrics.get("evaluate", {}).items():
            if reply.get("num-examples", 0) > 0 and partition_id in self.domain_of:
                by_domain.setdefault(self.domain_of[partition_id], []).append(reply["accuracy"])
        return {f"personalized_accuracy_{d}": _mean(values) for d, values in sorted(by_domain.items())}

    def _score_splits(self, pred: torch.Tensor | None, prefix: str, metrics: dict[str, float],
                      domains: bool = False) -> None:
        """From a model's test predictions, long-tailed scenarios: accuracy on the head /
        middle / tail classes; with ``domains``, multi-domain scenarios: accuracy on each
        domain's test split and their unweighted mean (the multi-domain papers' metric)."""
        by_domain = domains and len(self.domain_tests) > 1
        if pred is None or not (self.class_groups or by_domain):
            return
        if self.class_groups:
            split = group_accuracies(pred, self.test.y_test, self.class_groups)
            metrics.update({f"{prefix}_{group}": acc for group, acc in split.items()})
        if by_domain:
            split = domain_accuracies(pred, self.test.y_test, self.domain_tests)
            metrics.update({f"{prefix}_{d}": acc for d, acc in split.items()})


def evaluate_global(models: dict[str, torch.nn.Module], test) -> dict[str, tuple[float, float, torch.Tensor | None]]:
    """(loss, accuracy, test predictions) of each generic model on the held-out test set,
    in one pass over it (a seam for tests to fail a round). Graphs: no predictions."""
    if hasattr(test, "edge_index"):
        return {name: (*score(model, test), None) for name, model in models.items()}
    return score_many(models, test.x_test, test.y_test)


def run_server(grid: Grid, scenario: Scenario, progress: TextIO | None = sys.stdout,
               tags: dict[str, str] | None = None, run_name: str | None = None,
               checkpointing: Checkpointing | None = None) -> RunSummary:
    """Run ``scenario``'s strategy over ``grid`` and log it (with extra ``tags``, under
    ``run_name``), checkpointing as ``checkpointing`` says, or continuing the run its
    ``resume`` checkpoint is of; returns what was logged."""
    # Flower samples clients with the module-level `random`: seed it for reproducibility.
    random.seed(scenario.seed)
    torch.manual_seed(scenario.seed)
    sampling = scenario.sampling
    needed = sampling.available_needed(scenario.partition.num_clients)
    roster = RosterGrid(grid, max_reply_bytes=int(sampling.max_reply_mb * 2**20), needed=needed,
                        wait_s=sampling.node_wait_s, query_timeout=min(sampling.round_timeout_s, sampling.node_wait_s))
    resolved = resolve_strategy(scenario)  # the one place a run's strategy is resolved
    resume = checkpointing.resume if checkpointing else None
    tracker = RunTracker(scenario, resolved, progress=progress, tags=tags, run_name=run_name,
                         resume_run_id=resume["run_id"] if resume else None)
    with tracker.active():
        summary = RunSummary(run_id=tracker.run_id or "", history=tracker.history)
        if checkpointing is not None:
            tracker.set_tag(CHECKPOINT_TAG, str(checkpointing.folder))
        if resume is None:
            tracker.log_partition()
        roster.build_roster(scenario.partition.num_clients)
        strategy = build_strategy(scenario, resolved)
        install_measurement_averaging(strategy)
        evaluate_on_schedule(strategy, scenario)
        skipped = skip_thin_rounds(strategy, scenario, roster)
        hook = RoundHook(scenario, roster, tracker, summary, strategy, skipped, checkpointing)
        initial = ArrayRecord(new_model(scenario).state_dict())
        done = hook.offset  # rounds a resumed run has behind it
        if resume is not None:
            initial = hook.resume_from(resume)
            continue_from(strategy, done)  # outermost: the wrappers above see the true round
        result = strategy.start(
            grid=roster,
            initial_arrays=initial,
            num_rounds=scenario.rounds - done,
            timeout=scenario.sampling.round_timeout_s,
            # The one server setting a client of Flower's examples reads (and flowerbed's obeys).
            train_config=ConfigRecord({"lr": scenario.client.lr}),
            evaluate_config=ConfigRecord(),
            evaluate_fn=hook,
        )
        # No round applied since the start (or the resume): the arrays it started from.
        aggregated = (result.arrays if len(result.arrays) else initial).to_torch_state_dict()
        final = new_model(scenario)
        # Parameters that clients keep stay at their initial values here.
        final.load_state_dict(aggregated, strict=False)
        tracker.log_model(final, aggregated)
        tracker.log_final(best_validation_summary(tracker.history))
    return summary


def evaluate_on_schedule(strategy, scenario: Scenario) -> None:
    """Wrap the strategy's ``configure_evaluate`` so that clients evaluate only on the
    rounds ``sampling.evaluate_every`` names (a round without messages costs nothing)."""
    if scenario.sampling.evaluate_every == 1:
        return
    configure = strategy.configure_evaluate

    def configure_evaluate(server_round, arrays, config, grid):
        if not scenario.sampling.evaluates(server_round, scenario.rounds):
            return []
        return configure(server_round, arrays, config, grid)

    strategy.configure_evaluate = configure_evaluate


# (validation metric, test metric, summary names): graphs score after training, arrays
# score the model the evaluate message carries.
BEST_VALIDATION = (
    ("personalized_val_accuracy_trained", "personalized_accuracy_trained",
     "personalized_accuracy_trained_best_val", "best_val_round"),
    ("personalized_val_accuracy", "personalized_accuracy", "personalized_accuracy_best_val", "best_val_round_evaluate"),
)


def best_validation_summary(history: dict[int, dict[str, float]]) -> dict[str, float]:
    """The "Acc @ Best Val": the client-mean test accuracy at the round of best client-mean
    validation accuracy (the first such round), and that round; for each pair that was logged."""
    out = {}
    for val_key, test_key, name, round_name in BEST_VALIDATION:
        val = {r: m[val_key] for r, m in history.items() if val_key in m and test_key in m}
        if val:
            best = max(val, key=lambda r: (val[r], -r))
            out.update({name: history[best][test_key], round_name: float(best)})
    return out


def build_server_app(
    scenario: Scenario | None = None,
    on_finish: Callable[[RunSummary], None] | None = None,
    progress: TextIO | None = sys.stdout,
    tags: dict[str, str] | None = None,
    run_name: str | None = None,
    on_fail: Callable[[BaseException], None] | None = None,
    checkpointing: Checkpointing | None = None,
    own_log: bool = False,
) -> ServerApp:
    """A ServerApp bound to ``scenario``, or reading it from the run config if None;
    ``on_finish`` gets the summary of a finished run, ``on_fail`` the error that ended
    one (then re-raised). With ``own_log`` (the app ``flwr run`` starts), the run's log
    is flowerbed's line per round instead of Flower's, ending with the MLflow run."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        if scenario is None:
            read = read_run_config(context.run_config)
            for note in read.notes():
                print(f"flowerbed: {note}", file=progress or sys.stderr, flush=True)
        resolved = scenario or read.scenario
        try:
            with flower_quiet(own_log):
                summary = run_server(grid, resolved, progress=progress, tags=tags, run_name=run_name,
                                     checkpointing=checkpointing)
        except Exception as err:
            if on_fail is not None:
                on_fail(err)
            raise
        if own_log:
            print(f"flowerbed: finished: MLflow run {summary.run_id} in experiment "
                  f"{resolved.mlflow.experiment!r} ({resolved.mlflow.tracking_uri})", file=progress or sys.stdout,
                  flush=True)
        if on_finish is not None:
            on_finish(summary)

    return app


@contextlib.contextmanager
def flower_quiet(quiet: bool) -> Iterator[None]:
    """Flower's round-by-round INFO lines off (its warnings and errors stay): they
    repeat flowerbed's progress line with Flower's own means of the reply metrics."""
    logger = logging.getLogger("flwr")
    level = logger.level
    if quiet:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


#: The app `flwr run` and the SuperLink load (scenario from the run config).
app = build_server_app(own_log=True)
