"""The ``flowerbed`` command: ``run`` a scenario, ``compare`` an experiment's runs.

Exit codes: 0 done, 1 the run failed (its MLflow run is marked FAILED), 2 bad input
(nothing started, no MLflow run left behind).
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from pathlib import Path

from flowerbed.sims.config import ConfigError, Scenario, load_scenario

EXIT_FAILED, EXIT_BAD_INPUT = 1, 2


def quiet_logs(verbose: bool = False) -> None:
    """Keep Flower, Ray and MLflow log noise out of the terminal unless ``--verbose``."""
    if verbose:
        return
    # Flower and MLflow set their loggers up on import, and MLflow's SQL store warns
    # on import: import them now, quietly, then turn the levels down.
    import flwr.simulation  # noqa: F401
    import mlflow  # noqa: F401 - installs warning filters of its own, so first

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import mlflow.store.tracking.sqlalchemy_store  # noqa: F401
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # Flower's run_simulation logs a deprecation notice meant for `flwr run` users.
    logging.getLogger("flwr").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=DeprecationWarning)


def resolve(args: argparse.Namespace) -> Scenario:
    """The scenario file with ``--set`` and the dedicated flags applied, validated."""
    overrides = list(args.set or [])
    if args.tracking_uri:
        overrides.append(f"mlflow.tracking_uri={args.tracking_uri!r}")
    if args.experiment:
        overrides.append(f"mlflow.experiment={args.experiment!r}")
    if args.data_root:
        overrides.append(f"dataset.root={str(Path(args.data_root).resolve())!r}")
    return load_scenario(args.scenario, overrides)


def preflight(scenario: Scenario) -> None:
    """Load the data and make the partition in this process before any worker starts,
    so a missing file or an impossible partition fails here, with its key or path."""
    from flowerbed.sims.datasets import DatasetMissing
    from flowerbed.sims.partitions import PartitionError, scenario_partition

    try:
        scenario_partition(scenario)
    except (DatasetMissing, PartitionError) as err:
        raise ConfigError(str(err)) from None


def cmd_run(args: argparse.Namespace) -> int:
    scenario = resolve(args)
    preflight(scenario)
    from flowerbed.server.simulate import simulate

    try:
        summary = simulate(scenario, verbose=args.verbose)
    except Exception as err:  # noqa: BLE001 - one line for the user; --verbose has the trace
        if args.verbose:
            raise
        print(f"flowerbed: run failed: {type(err).__name__}: {err}", file=sys.stderr)
        return EXIT_FAILED
    final = summary.history.get(scenario.rounds, {})
    print(f"MLflow run {summary.run_id} in experiment {scenario.mlflow.experiment!r} "
          f"({scenario.mlflow.tracking_uri}): final global accuracy "
          f"{final.get('global_accuracy', float('nan')):.4f}, personalized "
          f"{final.get('personalized_accuracy', float('nan')):.4f}")
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    """Print each client's share of the data and write the clients x classes heatmap."""
    from flowerbed.sims.partitions import scenario_partition
    from flowerbed.sims.stats import client_stats, format_stats, heatmap

    scenario = resolve(args)
    preflight(scenario)
    records = client_stats(scenario)
    print(format_stats(records, scenario_partition(scenario).class_groups))
    output = Path(args.output or f"{Path(args.scenario).stem}_partition.png")
    heatmap(records, output, title=f"{Path(args.scenario).name}: {scenario.dataset.name}, {scenario.partition.kind}")
    print(f"wrote {output}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from flowerbed.server.compare import ACCURACIES, compare

    metrics = tuple(args.metric) if args.metric else ACCURACIES
    return compare(args.experiment, args.tracking_uri, Path(args.output), args.group_by, metrics, args.where)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flowerbed", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="simulate a scenario on Ray and log it to MLflow")
    run.add_argument("scenario", help="scenario TOML file (see sims/)")
    run.add_argument("--set", action="append", metavar="KEY=VALUE",
                     help="override a config key by dotted path, e.g. strategy.name=fedprox")
    run.add_argument("--tracking-uri", help="MLflow tracking URI (default sqlite:///mlflow.db)")
    run.add_argument("--experiment", help="MLflow experiment name")
    run.add_argument("--data-root", help="dataset root (else $FLOWERBED_DATA_ROOT, else ~/.cache/flowerbed)")
    run.add_argument("--verbose", action="store_true", help="show Flower, Ray and MLflow logs")
    run.set_defaults(func=cmd_run)

    data = sub.add_parser("data", help="show each client's data and write a clients x classes heatmap")
    data.add_argument("scenario", help="scenario TOML file (see sims/)")
    data.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key")
    data.add_argument("--data-root", help="dataset root")
    data.add_argument("--output", help="heatmap PNG (default: <scenario>_partition.png)")
    data.add_argument("--verbose", action="store_true")
    data.set_defaults(func=cmd_data, tracking_uri=None, experiment=None)

    cmp = sub.add_parser("compare", help="tabulate and plot an experiment's runs by strategy")
    cmp.add_argument("--experiment", required=True)
    cmp.add_argument("--tracking-uri", default="sqlite:///mlflow.db")
    cmp.add_argument("--output", default="compare.png", help="PNG of accuracy against round")
    cmp.add_argument("--group-by", default="strategy", help="run tag to group by (default: strategy)")
    cmp.add_argument("--metric", action="append",
                     help="metric to tabulate and plot (repeatable; default global_accuracy, personalized_accuracy)")
    cmp.add_argument("--where", default="", help="MLflow filter on the runs, e.g. \"tags.scenario = 'a'\"")
    cmp.add_argument("--verbose", action="store_true")
    cmp.set_defaults(func=cmd_compare)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet_logs(args.verbose)
    try:
        return args.func(args)
    except ConfigError as err:
        print(f"flowerbed: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
