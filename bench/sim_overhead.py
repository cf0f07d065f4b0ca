"""What flowerbed's simulation costs over a bare PyTorch loop doing the same training.

One workload, two ways, for each ``--clients`` size, each in a fresh child process
(this script re-invoked with ``--worker``), measured from the outside:

(a) bare: one process, a sequential loop. Per round every sampled client loads the
    global model, trains ``local_epochs`` on its own split (flowerbed's partition code,
    its ``TrainSettings``, its per-client per-round seed ``round_seed``), the client
    models are averaged weighted by training-set size (FedAvg, in partition order,
    Flower's formula), every sampled client scores the new global model on its local
    test split, and the server scores it on the global test set.
(b) flowerbed: the same scenario through ``flowerbed.server.simulate.simulate``
    (``--engine``: flowerbed's actor grid, or Flower's Simulation Engine), logging to a
    throwaway SQLite MLflow store.

With ``--fraction`` below 1, flowerbed runs first and the bare loop replays the
clients it sampled in each round (train and evaluate), so both still do the same
work. The final accuracies must agree (bit-identical by default: the bare loop runs
torch with the thread count a flowerbed client gets): that is the check.

Reported per side: wall seconds end to end (process start to exit: imports, start-up,
rounds, shut-down), start-up (process start to the start of round 1), the steady
round (mean of rounds 2+), CPU-seconds of the whole process tree (the child and every
descendant, Ray's raylet, GCS and workers included: this process is made their
subreaper and reaps them, so ``RUSAGE_CHILDREN`` counts them all), and peak PSS of the
tree (proportional set size: shared pages, Ray's object store included, counted once
in all, sampled every ``--sample-interval`` s). Wall times on a loaded machine are
indicative; CPU-seconds are the fair figure.

    .venv/bin/python bench/sim_overhead.py                         # 20 clients, 5 rounds
    .venv/bin/python bench/sim_overhead.py --clients 20 100 500 1000 --plot docs/performance_scaling.png
    .venv/bin/python bench/sim_overhead.py --clients 1000 --fraction 0.1
    .venv/bin/python bench/sim_overhead.py --clients 10000 --fraction 0.01 --partition iid --only flowerbed
    .venv/bin/python bench/sim_overhead.py --clients 100 --engine flower   # Flower's Simulation Engine
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROCESS_START = time.time()  # the worker's start, near enough (before its imports)
REPO = Path(__file__).resolve().parents[1]
#: The final global accuracies of (a) and (b) may differ by at most this much.
ACCURACY_TOLERANCE = 0.005


# --- the scenario ---------------------------------------------------------------------


def resolve_root(root: str) -> str:
    """The data root as an absolute path: from the working directory, else the repository."""
    path = Path(root).expanduser()
    if not path.is_absolute() and not path.exists() and (REPO / path).exists():
        path = REPO / path
    return str(path.resolve())


def build_scenario(args: argparse.Namespace, num_clients: int, tracking_uri: str):
    from flowerbed.sims.config import parse_scenario

    partition: dict = {"kind": args.partition, "num_clients": num_clients}
    if args.partition == "dirichlet":
        partition.update(alpha=args.alpha, min_partition_size=args.min_partition_size)
    extra = {"simulation": {"engine": args.engine}} if getattr(args, "engine", None) else {}
    return parse_scenario({  # mlflow.tracking_uri: a temp file of the worker (see run_worker)
        **extra,
        "seed": args.seed,
        "rounds": args.rounds,
        # Absolute (main() resolved it): workers run in a temp directory.
        "dataset": {"name": args.dataset, "root": args.data_root},
        "partition": partition,
        "model": {"name": args.model, "hidden": args.hidden},
        "strategy": {"name": "fedavg"},
        "client": {"local_epochs": args.local_epochs, "batch_size": args.batch_size,
                   "lr": args.lr, "optimizer": "sgd", "num_cpus": args.num_cpus},
        "sampling": {"fraction_train": args.fraction, "fraction_evaluate": args.fraction,
                     "min_clients": min(2, num_clients)},
        "mlflow": {"experiment": "bench-sim-overhead", "tracking_uri": tracking_uri},
    })


def _steady(times: list[float]) -> float:
    """Mean of rounds 2+ (round 1 alone when there is only one)."""
    rest = times[1:] or times
    return sum(rest) / len(rest)


# --- (a) bare ---------------------------------------------------------------------------


def run_bare(args: argparse.Namespace) -> dict:
    import random

    import torch

    from flowerbed.sims.task import client_data, new_model, round_seed, test_data
    from flowerbed.client.trainer import TrainSettings, train_local
    from flowerbed.sims.scoring import evaluate

    # The thread count flowerbed's ClientApp gives each client (its `_limit_threads`),
    # so that the arithmetic, and so the result, is bit-identical.
    threads = args.bare_threads if args.bare_threads is not None else max(1, int(args.num_cpus))
    if threads > 0:
        torch.set_num_threads(threads)
    scenario = build_scenario(args, args.clients[0], tracking_uri="unused")
    n = scenario.partition.num_clients
    schedule = json.loads(Path(args.schedule).read_text()) if args.schedule else None

    t0 = time.perf_counter()
    # Setup: what flowerbed's server (seeds, test set, initial model) and clients
    # (dataset, partition, their tensors) load, done once here.
    random.seed(scenario.seed)
    torch.manual_seed(scenario.seed)
    data = [client_data(scenario, pid) for pid in range(n)]
    test = test_data(scenario)
    model = new_model(scenario)
    global_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    settings = TrainSettings.from_scenario(scenario.client)
    model.load_state_dict(global_state)
    evaluate(model, test.x_test, test.y_test)  # round 0: the initial model, as flowerbed's hook
    setup_end = time.time()

    round_times: list[float] = []
    history: dict[int, dict[str, float]] = {}
    for server_round in range(1, scenario.rounds + 1):
        start = time.perf_counter()
        trained = schedule[str(server_round)]["train"] if schedule else list(range(n))
        evaluated = schedule[str(server_round)]["evaluate"] if schedule else list(range(n))
        sizes = [len(data[pid].y_train) for pid in trained]
        aggregate: dict[str, torch.Tensor] = {}
        losses = []
        for pid, size in zip(trained, sizes):
            model.load_state_dict(global_state)
            seed = round_seed(scenario, server_round, pid)
            torch.manual_seed(seed)
            losses.append(train_local(model, data[pid].x_train, data[pid].y_train, settings,
                                      torch.Generator().manual_seed(seed)))
            factor = size / sum(sizes)  # Flower's aggregate_arrayrecords
            for key, value in model.state_dict().items():
                aggregate[key] = aggregate[key] + value * factor if key in aggregate else value * factor
        global_state = aggregate
        model.load_state_dict(global_state)
        local = [evaluate(model, data[pid].x_test, data[pid].y_test) for pid in evaluated]
        g_loss, g_acc = evaluate(model, test.x_test, test.y_test)
        round_times.append(time.perf_counter() - start)
        scored = [acc for (_, acc), pid in zip(local, evaluated) if len(data[pid].y_test) > 0]
        history[server_round] = {
            "global_accuracy": g_acc,
            "global_loss": g_loss,
            "train_loss": sum(l * s for l, s in zip(losses, sizes)) / sum(sizes),
            "personalized_accuracy": sum(scored) / max(len(scored), 1),
        }
    return {"kind": "bare", "clients": n, "startup_s": setup_end - PROCESS_START, "round_s": round_times,
            "history": history, "torch_threads": torch.get_num_threads()}


# --- (b) flowerbed ----------------------------------------------------------------------


def run_flowerbed(args: argparse.Namespace) -> dict:
    from flowerbed.server import app as server_app
    from flowerbed.server.simulate import simulate

    # The start of round 1: the end of the hook's round-0 call (the initial model scored).
    round0_end: list[float] = []
    hook_call = server_app.RoundHook.__call__

    def timed_hook(hook, server_round, arrays):
        result = hook_call(hook, server_round, arrays)
        if not round0_end:
            round0_end.append(time.time())
        return result

    server_app.RoundHook.__call__ = timed_hook
    with tempfile.TemporaryDirectory(prefix="flowerbed-bench-") as tmp:
        scenario = build_scenario(args, args.clients[0], f"sqlite:///{tmp}/mlflow.db")
        summary = simulate(scenario, verbose=False, progress=None)
    history = {int(r): m for r, m in summary.history.items()}
    rounds = range(1, scenario.rounds + 1)
    # Which clients trained and evaluated in each round: the bare loop replays them.
    schedule = {r: {kind: sorted(int(p) for p in summary.client_metrics.get(r, {}).get(kind, {}))
                    for kind in ("train", "evaluate")} for r in rounds}
    return {"kind": "flowerbed", "clients": scenario.partition.num_clients,
            "startup_s": round0_end[0] - PROCESS_START,
            "round_s": [history[r]["round_seconds"] for r in rounds],
            "history": {r: history[r] for r in rounds}, "schedule": schedule}


# --- the parent: run the workers, measure them from the outside -------------------------

PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> None:
    """Orphaned descendants (Ray's processes once the driver exits) are re-parented to
    this process, which reaps them: then ``RUSAGE_CHILDREN`` counts the whole tree."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


def tree_pss_kb(pid: int) -> int:
    """Summed PSS (KiB) of ``pid`` and its descendants, from /proc/*/smaps_rollup."""
    import psutil

    total = 0
    try:
        procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return 0
    for proc in procs:
        try:
            with open(f"/proc/{proc.pid}/smaps_rollup") as f:
                total += next(int(line.split()[1]) for line in f if line.startswith("Pss:"))
        except (OSError, StopIteration):
            pass
    return total


def reap_orphans(grace_s: float = 20.0) -> int:
    """Wait for the descendants left behind (Ray's daemons stop on their own after the
    driver); kill what is still there after ``grace_s``. Returns how many were reaped."""
    import psutil

    reaped, deadline = 0, time.monotonic() + grace_s
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return reaped
        if pid:
            reaped += 1
            continue
        if time.monotonic() > deadline:
            for child in psutil.Process().children(recursive=True):
                child.kill()
        time.sleep(0.1)


def worker_argv(args: argparse.Namespace, kind: str, clients: int, result: str, schedule: str | None) -> list[str]:
    argv = [sys.executable, str(Path(__file__).resolve()), "--worker", kind, "--result", result,
            "--clients", str(clients)]
    for name in ("rounds", "dataset", "model", "hidden", "data_root", "partition", "alpha", "min_partition_size",
                 "seed", "local_epochs", "batch_size", "lr", "num_cpus", "fraction", "bare_threads", "engine"):
        value = getattr(args, name)
        if value is not None:
            argv += [f"--{name.replace('_', '-')}", str(value)]
    if schedule:
        argv += ["--schedule", schedule]
    return argv


def run_worker(args: argparse.Namespace, kind: str, clients: int, schedule: dict | None = None) -> dict:
    """One measured child process: its result, wall, tree CPU-seconds and peak PSS."""
    with tempfile.TemporaryDirectory(prefix="flowerbed-bench-") as tmp:
        result = Path(tmp) / "result.json"
        schedule_file = None
        if schedule is not None:
            schedule_file = str(Path(tmp) / "schedule.json")
            Path(schedule_file).write_text(json.dumps(schedule))
        load = os.getloadavg()[0]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        # cwd: the temp dir, so that MLflow's ./mlruns never lands in the repository.
        proc = subprocess.Popen(worker_argv(args, kind, clients, str(result), schedule_file), cwd=tmp,
                                stdout=None if args.show_output else subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        peak_kb = 0
        output: list[str] = []
        if proc.stdout is not None:  # drained by a thread: a full pipe would block the child
            import threading

            threading.Thread(target=lambda: output.extend(proc.stdout), daemon=True).start()
        while proc.poll() is None:
            peak_kb = max(peak_kb, tree_pss_kb(proc.pid))
            time.sleep(args.sample_interval)
        wall = time.perf_counter() - start
        reap_orphans()
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode != 0 or not result.is_file():
            raise SystemExit(f"{kind} run with {clients} clients failed (exit {proc.returncode})\n"
                             + "".join(output)[-4000:])
        out = json.loads(result.read_text())
    out.update(wall_s=wall, load_before=load, peak_pss_mb=peak_kb / 1024,
               cpu_s=(after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime))
    return out


def report_size(bare: dict, flwr: dict, rounds: int) -> dict:
    n = bare["clients"]
    row = {"clients": n, "sampled": len(flwr["schedule"]["1"]["train"]) if "schedule" in flwr else n}
    for side, out in (("bare", bare), ("flowerbed", flwr)):
        row[side] = {key: out[key] for key in ("wall_s", "cpu_s", "peak_pss_mb", "startup_s")}
        row[side]["round_s"] = _steady(out["round_s"])
        row[side]["rounds"] = out["round_s"]
        row[side]["accuracy"] = out["history"][str(rounds)]["global_accuracy"]
        row[side]["load_before"] = out["load_before"]
    print(f"\n=== {n} clients ({row['sampled']} a round), {rounds} rounds ===")
    for side in ("bare", "flowerbed"):
        s = row[side]
        print(f"{side:<9} wall {s['wall_s']:7.2f} s  CPU {s['cpu_s']:7.2f} s  peak PSS {s['peak_pss_mb']:6.0f} MB  "
              f"start-up {s['startup_s']:6.2f} s  rounds [s] {' '.join(f'{t:.2f}' for t in s['rounds'])}  "
              f"(load before {s['load_before']:.2f})")
    acc_b, acc_f = row["bare"]["accuracy"], row["flowerbed"]["accuracy"]
    row["agree"] = abs(acc_b - acc_f) <= ACCURACY_TOLERANCE
    verdict = ("identical: the two runs did the same work" if acc_b == acc_f else
               "agree" if row["agree"] else f"DIFFER by more than {ACCURACY_TOLERANCE}: not the same work")
    print(f"final global accuracy: bare {acc_b:.4f}, flowerbed {acc_f:.4f}: {verdict}")
    return row


def ratio(row: dict, key: str) -> float:
    return row["flowerbed"][key] / row["bare"][key]


def print_table(rows: list[dict]) -> None:
    line = "-" * 118
    print("\n" + line)
    print(f"{'clients':>13} | {'wall s bare -> fb':>19} {'x':>5} | {'CPU-s bare -> fb':>18} {'x':>5} | "
          f"{'round s bare -> fb':>18} {'x':>5} | {'start-up s':>13} {'x':>5} | {'PSS MB':>12}")
    for r in rows:
        b, f = r["bare"], r["flowerbed"]
        who = f"{r['clients']}" + (f" ({r['sampled']})" if r["sampled"] != r["clients"] else "")
        print(f"{who:>13} | {b['wall_s']:8.1f} -> {f['wall_s']:7.1f} {ratio(r, 'wall_s'):5.2f} | "
              f"{b['cpu_s']:7.1f} -> {f['cpu_s']:7.1f} {ratio(r, 'cpu_s'):5.2f} | "
              f"{b['round_s']:7.2f} -> {f['round_s']:7.2f} {ratio(r, 'round_s'):5.2f} | "
              f"{b['startup_s']:5.1f} -> {f['startup_s']:5.1f} {ratio(r, 'startup_s'):5.2f} | "
              f"{b['peak_pss_mb']:5.0f} -> {f['peak_pss_mb']:5.0f}{'' if r['agree'] else '  DIFFER'}")
    print(line)
    print("fb = flowerbed; (k) = clients sampled a round; round = mean of rounds 2+; start-up = process start "
          "to round 1; CPU-s and PSS = the whole process tree")


def plot(rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    full = [r for r in rows if r["sampled"] == r["clients"]]
    if not full:
        return
    clients = [r["clients"] for r in full]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, key, label in zip(axes, ("cpu_s", "round_s", "peak_pss_mb"),
                              ("CPU-seconds, process tree", "steady round, s", "peak PSS, MB")):
        for side, style in (("bare", "o--"), ("flowerbed", "s-")):
            ax.plot(clients, [r[side][key] for r in full], style, label=side)
        ax.set_xscale("log")
        ax.set_xlabel("clients (all sampled)")
        ax.set_title(label)
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"plot: {path}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--clients", type=int, nargs="+", default=[20],
                   help="number of clients; several values run each size")
    p.add_argument("--rounds", type=int, default=5, help="server rounds")
    p.add_argument("--dataset", default="fashion_mnist", help="a flowerbed dataset name")
    p.add_argument("--model", default="mlp", help="a flowerbed model name")
    p.add_argument("--hidden", type=int, default=64, help="model.hidden")
    p.add_argument("--data-root", default="../shared/data",
                   help="relative: to the working directory, else to the repository")
    p.add_argument("--partition", choices=["dirichlet", "iid"], default="dirichlet", help="partition.kind")
    p.add_argument("--alpha", type=float, default=0.5, help="Dirichlet concentration")
    p.add_argument("--min-partition-size", type=int, default=5, help="partition.min_partition_size (dirichlet)")
    p.add_argument("--seed", type=int, default=0, help="scenario seed")
    p.add_argument("--local-epochs", type=int, default=1, help="client.local_epochs")
    p.add_argument("--batch-size", type=int, default=32, help="client.batch_size")
    p.add_argument("--lr", type=float, default=0.05, help="client.lr (SGD)")
    p.add_argument("--num-cpus", type=float, default=1.0, help="Ray CPUs per simulated client")
    p.add_argument("--fraction", type=float, default=1.0,
                   help="sampling.fraction_train and fraction_evaluate; below 1 the bare loop replays "
                        "flowerbed's sample")
    p.add_argument("--engine", choices=["actors", "flower"], default=None,
                   help="simulation.engine: flowerbed's actor grid (the default) or Flower's Simulation Engine")
    p.add_argument("--bare-threads", type=int, default=None,
                   help="torch threads of the bare loop; default: a flowerbed client's (bit-identical results)")
    p.add_argument("--sample-interval", type=float, default=0.5, help="PSS sampling period, seconds")
    p.add_argument("--only", choices=["bare", "flowerbed"], help="run one side only (no ratios)")
    p.add_argument("--show-output", action="store_true", help="let the workers print to the terminal")
    p.add_argument("--json", help="also write every size's figures to this file")
    p.add_argument("--plot", help="write the scaling plot (full-participation sizes) to this PNG")
    p.add_argument("--worker", choices=["bare", "flowerbed"], help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    p.add_argument("--schedule", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.data_root = resolve_root(args.data_root)
    if args.worker:
        out = run_bare(args) if args.worker == "bare" else run_flowerbed(args)
        Path(args.result).write_text(json.dumps(out))
        return 0

    become_subreaper()
    print(f"sim_overhead: {args.dataset}/{args.model}(hidden {args.hidden}), "
          f"{args.partition}{f' alpha {args.alpha}' if args.partition == 'dirichlet' else ''}, "
          f"{args.rounds} rounds, fraction {args.fraction}, {args.local_epochs} local epoch(s), "
          f"batch {args.batch_size}, SGD lr {args.lr}; {os.cpu_count()} CPUs, {args.num_cpus} CPU(s) per client; "
          f"engine {args.engine or 'default'}", flush=True)
    rows, raw = [], []
    for clients in args.clients:
        sides: dict[str, dict] = {}
        order = ("flowerbed", "bare")  # flowerbed first: the bare loop replays its sample
        for kind in order:
            if args.only and kind != args.only:
                continue
            print(f"[{clients} clients] running {kind} ...", flush=True)
            schedule = sides["flowerbed"]["schedule"] if kind == "bare" and "flowerbed" in sides and \
                args.fraction < 1 else None
            sides[kind] = run_worker(args, kind, clients, schedule)
            print(f"[{clients} clients] {kind}: wall {sides[kind]['wall_s']:.1f} s, CPU {sides[kind]['cpu_s']:.1f} s",
                  flush=True)
        if len(sides) == 2:
            rows.append(report_size(sides["bare"], sides["flowerbed"], args.rounds))
        else:
            (side,) = sides.values()
            print(json.dumps({k: v for k, v in side.items() if k not in ("history", "schedule")}, indent=1))
        raw.append({k: {kk: vv for kk, vv in v.items() if kk != "schedule"} for k, v in sides.items()})
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "runs": raw}, indent=1))
    if rows:
        print_table(rows)
        if args.plot:
            plot(rows, args.plot)
    return 0 if all(r["agree"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
