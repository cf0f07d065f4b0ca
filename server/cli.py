"""The ``flowerbed`` command: ``run`` a scenario, ``sweep`` strategies x seeds on one,
``compare`` an experiment's runs, show a scenario's ``data``.

Exit codes: 0 done, 1 the run failed (its MLflow run is marked FAILED), 2 bad input
(nothing started, no MLflow run left behind).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import warnings
from pathlib import Path

from flowerbed.sims.config import ConfigError, Scenario, SimulationConfig, load_scenario, sqlite_file

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
    logging.getLogger("flwr").addFilter(no_client_tracebacks)
    warnings.filterwarnings("ignore", category=DeprecationWarning)


def toml_string(text: str) -> str:
    """``text`` as a TOML basic string (JSON's escapes are TOML's), so that quotes and
    backslashes in a flag's value reach the config unchanged."""
    return json.dumps(text, ensure_ascii=False)


def no_client_tracebacks(record: logging.LogRecord) -> bool:
    """A logging filter: Flower logs a failed client's exception and traceback (about 60
    lines, twice); flowerbed logs one line per failed reply instead (``--verbose`` keeps
    Flower's)."""
    text = str(record.msg)
    return "Traceback (most recent call last)" not in text and "ClientAppException occurred" not in text


def common_overrides(args: argparse.Namespace) -> list[str]:
    """``--set`` plus the dedicated flags, as overrides."""
    overrides = list(args.set or [])
    if args.tracking_uri:
        overrides.append(f"mlflow.tracking_uri={toml_string(args.tracking_uri)}")
    if args.experiment:
        overrides.append(f"mlflow.experiment={toml_string(args.experiment)}")
    if args.data_root:
        overrides.append(f"dataset.root={toml_string(str(Path(args.data_root).resolve()))}")
    if getattr(args, "ray_address", None):
        overrides.append(f"simulation.ray_address={toml_string(args.ray_address)}")
    return overrides


def resolve(args: argparse.Namespace) -> Scenario:
    """The scenario file with the overrides applied, validated with its strategy."""
    scenario = load_scenario(args.scenario, common_overrides(args))  # first: a bad file needs no torch
    from flowerbed.strategies import resolve_strategy

    resolve_strategy(scenario)
    return scenario


def parse_tags(items: list[str] | None) -> dict[str, str]:
    tags = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--tag {item!r}: expected KEY=VALUE")
        tags[key.strip()] = value.strip()
    return tags


def preflight(scenario: Scenario, progress=sys.stdout) -> None:
    """Load the data and make the partition in this process before any worker starts,
    so a missing file or an impossible partition fails here, with its key or path; a
    line per step, with its seconds."""
    from flowerbed.server.simulate import Phases
    from flowerbed.sims.datasets import DatasetMissing, load_dataset
    from flowerbed.sims.partitions import PartitionError, scenario_partition

    from flowerbed.server.resources import check_before_ray

    check_before_ray(scenario)
    check_tracking_uri(scenario.mlflow.tracking_uri)
    phases = Phases(progress)
    try:
        load_dataset(scenario.dataset)
        phases.done(f"data: {scenario.dataset.name}")
        scenario_partition(scenario)
        phases.done(f"partition: {scenario.partition.kind}, {scenario.partition.num_clients} clients")
    except (DatasetMissing, PartitionError) as err:
        raise ConfigError(str(err)) from None


def check_tracking_uri(uri: str) -> None:
    """A store MLflow could not open fails the run only after Ray started (an unreachable
    server after a long silence): check that its folder exists, or its server answers."""
    import socket
    import urllib.parse

    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme == "sqlite":
        db = sqlite_file(uri)
        folder = None if db is None else db.parent
        if folder is None or not folder.is_dir():
            raise ConfigError(f"mlflow.tracking_uri: {uri!r}: no folder {folder} for the SQLite file "
                              "(write sqlite:///PATH, the folder existing)")
    elif parsed.scheme in ("http", "https"):
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        try:
            socket.create_connection((parsed.hostname or "", port), timeout=3).close()
        except OSError as err:
            raise ConfigError(f"mlflow.tracking_uri: cannot reach {parsed.hostname}:{port} ({err.strerror or err})") from None
    elif parsed.scheme not in ("postgresql", "mysql", "mssql", "databricks", "file"):
        raise ConfigError(f"mlflow.tracking_uri: {uri!r}: unknown store; use sqlite:///FILE, http(s)://HOST:PORT "
                          "or a database URI (postgresql://...)")


def cmd_run(args: argparse.Namespace) -> int:
    checkpointing = None
    if args.resume:
        if args.scenario or args.set or args.experiment or args.data_root or args.run_name:
            raise ConfigError("--resume continues a run as it was configured: give no scenario file, --set, "
                              "--experiment, --data-root or --run-name")
        from flowerbed.server.checkpoint import check_store, resumable

        uri = args.tracking_uri or "sqlite:///mlflow.db"
        check_store(args.resume, uri)
        quiet_logs(args.verbose)
        scenario, checkpointing = resumable(args.resume, uri)
        if args.ray_address:  # where it runs, not what it computes
            scenario = scenario.model_copy(update={"simulation": SimulationConfig(ray_address=args.ray_address)})
        print(f"flowerbed: resuming MLflow run {checkpointing.resume['run_id']} after round "
              f"{checkpointing.resume_round} of {scenario.rounds}", flush=True)
    elif not args.scenario:
        raise ConfigError("run: give a scenario file (or --resume RUN_ID)")
    else:
        scenario = resolve(args)
    tags = parse_tags(args.tag)
    preflight(scenario)
    quiet_logs(args.verbose)  # after the checks: a bad input is rejected before Flower and MLflow load
    from flowerbed.server.simulate import simulate

    stop_on_signals()
    try:
        summary = simulate(scenario, verbose=args.verbose, tags=tags, run_name=args.run_name,
                           checkpointing=checkpointing)
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


def stop_on_signals() -> None:
    """SIGINT / SIGTERM end a run at once: its MLflow run marked KILLED (every round
    logged so far kept), Ray and its workers stopped, exit 130 / 143. Flower's own
    handling waits for its thread pool, which can hang; a second signal exits at once."""
    import signal

    def stop(signum, frame):  # noqa: ARG001 - the signal module's signature
        if getattr(stop, "stopping", False):
            os._exit(128 + signum)
        stop.stopping = True  # type: ignore[attr-defined]
        print(f"flowerbed: {signal.Signals(signum).name}: stopping (again to force)", file=sys.stderr, flush=True)
        from flowerbed.server.simulate import shutdown_ray
        from flowerbed.server.tracking import end_open_runs

        for run_id in end_open_runs("KILLED"):
            print(f"flowerbed: MLflow run {run_id} marked KILLED", file=sys.stderr, flush=True)
        descendants, session = own_descendants(), ray_session()  # before Ray's shutdown orphans them
        no_new_ray()
        with contextlib.suppress(Exception):
            shutdown_ray()
        # Ray's shutdown can leave its agents: end whatever of this run is left, found by
        # ancestry or by Ray's session name in its command line, until nothing is.
        for _ in range(5):
            left = [*descendants, *own_descendants(), *processes_of_session(session)]
            if not any(p.is_running() for p in left):
                break
            end_processes(left, grace_s=1.0)
            descendants = []
        os._exit(128 + signum)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)


def own_descendants() -> list:
    """This process's children and theirs (Ray's raylet, its workers), as psutil processes."""
    try:
        import psutil

        return psutil.Process().children(recursive=True)
    except Exception:  # noqa: BLE001 - no psutil, or the tree changed while read: nothing to add
        return []


def no_new_ray() -> None:
    """Stopping: Flower's simulation thread must not start Ray again once it is shut down
    (a restarted Ray's agents outlived the run)."""
    with contextlib.suppress(Exception):
        import ray

        def refuse(*args, **kwargs):  # noqa: ARG001 - ray.init's signature
            raise RuntimeError("flowerbed is stopping: Ray is not started again")

        ray.init = refuse


def ray_session() -> str | None:
    """The name of this process's Ray session (it names the session's every process), if any."""
    try:
        import ray
        from ray._private import worker

        return worker._global_node.session_name if ray.is_initialized() and worker._global_node else None
    except Exception:  # noqa: BLE001 - Ray's internals moved, or it is stopping: no name
        return None


def processes_of_session(session: str | None) -> list:
    """Processes whose command line names Ray session ``session`` (not this one)."""
    if not session:
        return []
    import psutil

    found = []
    for process in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error, TypeError):
            if process.pid != os.getpid() and session in " ".join(process.info["cmdline"] or []):
                found.append(process)
    return found


def end_processes(processes: list, grace_s: float = 3.0) -> None:
    """Terminate what is left of ``processes`` (a worker a signal or Ray's shutdown did not
    end), then kill what is still there after ``grace_s``."""
    if not processes:
        return
    import psutil

    alive = [p for p in processes if p.is_running()]
    for process in alive:
        with contextlib.suppress(psutil.Error):
            process.terminate()
    _, alive = psutil.wait_procs(alive, timeout=grace_s)
    for process in alive:
        with contextlib.suppress(psutil.Error):
            process.kill()


def cmd_data(args: argparse.Namespace) -> int:
    """Print each client's share of the data and write the clients x classes heatmap."""
    from flowerbed.sims.partitions import scenario_partition
    from flowerbed.sims.stats import client_stats, format_stats, heatmap

    scenario = resolve(args)
    preflight(scenario)
    quiet_logs(args.verbose)
    records = client_stats(scenario)
    groups = scenario_partition(scenario).class_groups
    print(format_stats(records, groups))
    output = Path(args.output or f"{Path(args.scenario).stem}_partition.png")
    heatmap(records, output, title=f"{Path(args.scenario).name}: {scenario.dataset.name}, {scenario.partition.kind}",
            class_groups=groups)
    print(f"wrote {output}")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    """Run strategies x seeds on one scenario file, skipping finished cells; then compare them."""
    from flowerbed.server.compare import ACCURACIES, GROUP_BY, compare
    from flowerbed.server.sweep import Variant, plan, run_filter, run_sweep

    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()] if args.seeds else []
    if not strategies or not seeds:
        raise ConfigError("--strategies and --seeds: give at least one of each (e.g. --seeds 0,1,2)")
    cells = plan(args.scenario, [Variant.strategy(s) for s in strategies], seeds, common_overrides(args))
    for cell in cells:
        preflight(cell.scenario)  # cached by (dataset, partition, seed): once per seed
    quiet_logs(args.verbose)
    first = cells[0].scenario
    name = args.name or f"{first.name or Path(args.scenario).stem}:{','.join(strategies)}"
    try:
        run_ids = run_sweep(cells, name)
    except Exception as err:  # noqa: BLE001 - finished cells stay finished; rerun to continue
        if args.verbose:
            raise
        print(f"flowerbed: sweep stopped: {type(err).__name__}: {err} (rerun to continue)", file=sys.stderr)
        return EXIT_FAILED
    metrics = tuple(args.metric) if args.metric else ACCURACIES
    output = Path(args.output)
    return compare(first.mlflow.experiment, first.mlflow.tracking_uri, output,
                   GROUP_BY, metrics, run_filter(run_ids), output.with_suffix(".md"))


def cmd_compare(args: argparse.Namespace) -> int:
    quiet_logs(args.verbose)
    from flowerbed.server.compare import ACCURACIES, compare

    metrics = tuple(args.metric) if args.metric else ACCURACIES
    group_by = tuple(t.strip() for t in args.group_by.split(",") if t.strip())
    output = Path(args.output)
    return compare(args.experiment, args.tracking_uri, output, group_by, metrics, args.where,
                   output.with_suffix(".md"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flowerbed", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="simulate a scenario on Ray and log it to MLflow")
    run.add_argument("scenario", nargs="?", help="scenario TOML file (see sims/)")
    run.add_argument("--set", action="append", metavar="KEY=VALUE",
                     help="override a config key by dotted path, e.g. rounds=50 or strategy.name=NAME")
    run.add_argument("--tracking-uri", help="MLflow tracking URI (default sqlite:///mlflow.db)")
    run.add_argument("--experiment", help="MLflow experiment name")
    run.add_argument("--data-root", help="dataset root (else $FLOWERBED_DATA_ROOT, else ~/.cache/flowerbed)")
    run.add_argument("--tag", action="append", metavar="KEY=VALUE", help="an extra tag on the MLflow run")
    run.add_argument("--ray-address", metavar="ADDRESS",
                     help="attach to this running Ray cluster (what `ray start --head` prints, or 'auto') "
                          "instead of starting Ray here; = --set simulation.ray_address=ADDRESS")
    run.add_argument("--run-name", help="the MLflow run's name (default <method>-<scenario>-seed<seed>)")
    run.add_argument("--resume", metavar="RUN_ID",
                     help="continue an interrupted run from its last checkpoint (an MLflow run id, or 'last')")
    run.add_argument("--verbose", action="store_true", help="show Flower, Ray and MLflow logs")
    run.set_defaults(func=cmd_run)

    sweep = sub.add_parser("sweep", help="run strategies x seeds on one scenario, then compare them")
    sweep.add_argument("scenario", help="scenario TOML file (see sims/)")
    sweep.add_argument("--strategies", required=True,
                       help="comma-separated strategy names (README lists them), add-ons joined with +: A,B,A+ADDON")
    sweep.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    sweep.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key in every run")
    sweep.add_argument("--tracking-uri", help="MLflow tracking URI (default: the scenario's)")
    sweep.add_argument("--experiment", help="MLflow experiment name (default: the scenario's)")
    sweep.add_argument("--data-root", help="dataset root")
    sweep.add_argument("--name", help="the sweep tag of its runs (default <scenario>:<strategies>)")
    sweep.add_argument("--output", default="compare.png", help="PNG of accuracy against round (and <output>.md)")
    sweep.add_argument("--metric", action="append", help="metric to tabulate and plot (repeatable)")
    sweep.add_argument("--verbose", action="store_true")
    sweep.set_defaults(func=cmd_sweep)

    data = sub.add_parser("data", help="show each client's data and write a clients x classes heatmap")
    data.add_argument("scenario", help="scenario TOML file (see sims/)")
    data.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key")
    data.add_argument("--data-root", help="dataset root")
    data.add_argument("--output", help="heatmap PNG (default: <scenario>_partition.png)")
    data.add_argument("--verbose", action="store_true")
    data.set_defaults(func=cmd_data, tracking_uri=None, experiment=None)

    cmp = sub.add_parser("compare", help="tabulate and plot an experiment's runs by scenario and method")
    cmp.add_argument("--experiment", required=True)
    cmp.add_argument("--tracking-uri", default="sqlite:///mlflow.db")
    cmp.add_argument("--output", default="compare.png", help="PNG of accuracy against round (and <output>.md)")
    cmp.add_argument("--group-by", default="scenario,method",
                     help="comma-separated run tags to group by (default: scenario,method)")
    cmp.add_argument("--metric", action="append",
                     help="metric to tabulate and plot (repeatable; default global_accuracy, personalized_accuracy)")
    cmp.add_argument("--where", default="", help="MLflow filter on the runs, e.g. \"tags.scenario = 'a'\"")
    cmp.add_argument("--verbose", action="store_true")
    cmp.set_defaults(func=cmd_compare)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:  # each command checks its input first, then loads Flower and MLflow (quiet_logs)
        return args.func(args)
    except ConfigError as err:
        print(f"flowerbed: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
