"""What flowerbed's simulation costs over a bare PyTorch loop doing the same training.

One workload, two ways, for each ``--clients`` size:

(a) bare: one process, a sequential loop. Per round every client loads the global
    model, trains ``local_epochs`` on its own split (flowerbed's partition code, its
    ``TrainSettings``, its per-client per-round seed ``round_seed``), the client
    models are averaged weighted by training-set size (FedAvg, in partition order,
    Flower's formula), every client scores the new global model on its local test
    split, and the server scores it on the global test set.
(b) flowerbed: the same scenario through ``flowerbed.server.simulate.simulate``
    (Flower's Simulation Engine on Ray), logging to a throwaway SQLite MLflow store.

Each run happens in a fresh child process (this script re-invoked with
``--worker``), so that imports, caches and peak RSS of one run never leak into the
next. Reported: wall time in total and per round, the steady-state round mean
(rounds 2+), flowerbed/bare ratios, peak memory (bare: ``getrusage`` peak RSS;
flowerbed: peak of the summed RSS of the worker process and all its descendants,
Ray's raylet, GCS and workers included, sampled every 0.2 s), and the final global
accuracy of both, which must agree: that is the check that the workloads are the
same. The bare loop runs torch with the thread count a flowerbed client gets
(``int(client.num_cpus)``, flowerbed's ``_limit_threads``), so its arithmetic is the
clients' own and the two final accuracies come out identical; ``--bare-threads 0``
gives it torch's default instead (then they agree to ~1e-3). Timing is wall clock on
a shared machine: treat single runs as indicative.

    .venv/bin/python bench/sim_overhead.py                        # 20 clients, 5 rounds
    .venv/bin/python bench/sim_overhead.py --clients 20 100
    .venv/bin/python bench/sim_overhead.py --clients 10 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

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
        partition["alpha"] = args.alpha
    return parse_scenario({  # mlflow.tracking_uri: a temp file of the worker (see run_worker)
        "seed": args.seed,
        "rounds": args.rounds,
        # Absolute (main() resolved it): workers run in a temp directory.
        "dataset": {"name": args.dataset, "root": args.data_root},
        "partition": partition,
        "model": {"name": args.model, "hidden": args.hidden},
        "strategy": {"name": "fedavg"},
        "client": {"local_epochs": args.local_epochs, "batch_size": args.batch_size,
                   "lr": args.lr, "optimizer": "sgd", "num_cpus": args.num_cpus},
        # Full participation, every round, for training and local evaluation.
        "sampling": {"fraction_train": 1.0, "fraction_evaluate": 1.0,
                     "min_clients": min(2, num_clients)},
        "mlflow": {"experiment": "bench-sim-overhead", "tracking_uri": tracking_uri},
    })


def _rss_mb(rss_bytes: float) -> float:
    return rss_bytes / 2**20


def _steady(times: list[float]) -> float:
    """Mean of rounds 2+ (round 1 alone when there is only one)."""
    rest = times[1:] or times
    return sum(rest) / len(rest)


# --- (a) bare ---------------------------------------------------------------------------


def run_bare(args: argparse.Namespace) -> dict:
    import random
    import resource

    import torch

    from flowerbed.client.task import client_data, new_model, round_seed, test_data
    from flowerbed.client.trainer import TrainSettings, evaluate, train_local

    # Default: the thread count flowerbed's ClientApp gives each client (its
    # `_limit_threads`), so the arithmetic, and so the result, is bit-identical.
    threads = args.bare_threads if args.bare_threads is not None else max(1, int(args.num_cpus))
    if threads > 0:
        torch.set_num_threads(threads)
    rss_start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    scenario = build_scenario(args, args.clients[0], tracking_uri="unused")
    n = scenario.partition.num_clients

    t0 = time.perf_counter()
    # Setup: what flowerbed's server (seeds, test set, initial model) and clients
    # (dataset, partition, their tensors) load, done once here.
    random.seed(scenario.seed)
    torch.manual_seed(scenario.seed)
    data = [client_data(scenario, pid) for pid in range(n)]
    test = test_data(scenario)  # a ClientData-like record, or (older trees) an (x, y) pair
    x_test, y_test = (test.x_test, test.y_test) if hasattr(test, "x_test") else test
    model = new_model(scenario)
    global_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    settings = TrainSettings.from_scenario(scenario.client)
    sizes = [len(d.y_train) for d in data]
    factors = [s / sum(sizes) for s in sizes]  # Flower's aggregate_arrayrecords
    model.load_state_dict(global_state)
    evaluate(model, x_test, y_test)  # round 0: the initial model, as flowerbed's hook
    setup_s = time.perf_counter() - t0

    round_times: list[float] = []
    history: dict[int, dict[str, float]] = {}
    for server_round in range(1, scenario.rounds + 1):
        start = time.perf_counter()
        aggregate: dict[str, torch.Tensor] = {}
        losses = []
        for pid, d in enumerate(data):
            model.load_state_dict(global_state)
            seed = round_seed(scenario, server_round, pid)
            torch.manual_seed(seed)
            losses.append(train_local(model, d.x_train, d.y_train, settings,
                                      torch.Generator().manual_seed(seed)))
            for key, value in model.state_dict().items():
                if key in aggregate:
                    aggregate[key] += value * factors[pid]
                else:
                    aggregate[key] = value * factors[pid]
        global_state = aggregate
        model.load_state_dict(global_state)
        local = [evaluate(model, d.x_test, d.y_test) for d in data]
        g_loss, g_acc = evaluate(model, x_test, y_test)
        round_times.append(time.perf_counter() - start)
        scored = [acc for (_, acc), d in zip(local, data) if len(d.y_test) > 0]
        history[server_round] = {
            "global_accuracy": g_acc,
            "global_loss": g_loss,
            "train_loss": sum(l * s for l, s in zip(losses, sizes)) / sum(sizes),
            "personalized_accuracy": sum(scored) / max(len(scored), 1),
        }
    total_s = time.perf_counter() - t0
    return {
        "kind": "bare",
        "clients": n,
        "total_s": total_s,
        "setup_s": setup_s,
        "round_s": round_times,
        "history": history,
        "peak_rss_mb": _rss_mb(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024),
        "rss_before_mb": _rss_mb(rss_start),
        "torch_threads": torch.get_num_threads(),
        "train_samples": sum(sizes),
    }


# --- (b) flowerbed ----------------------------------------------------------------------


def _import_psutil():
    try:
        import psutil
    except ImportError:  # Ray vendors it in ray/thirdparty_files, on sys.path once imported
        import ray  # noqa: F401
        import psutil
    return psutil


class TreeRssSampler(threading.Thread):
    """Peak of the summed RSS of this process and all its descendants."""

    def __init__(self, interval: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.psutil = _import_psutil()
        self.me = self.psutil.Process()
        self.interval = interval
        self.peak = 0
        self.peak_procs = 0
        self.peak_breakdown: list[tuple[str, int]] = []
        self.samples = 0
        self._stop_event = threading.Event()

    def sample(self) -> None:
        sizes = []
        for proc in [self.me, *self.me.children(recursive=True)]:
            try:
                sizes.append((proc, proc.memory_info().rss))
            except (self.psutil.NoSuchProcess, self.psutil.AccessDenied, self.psutil.ZombieProcess):
                pass
        self.samples += 1
        total = sum(rss for _, rss in sizes)
        if total > self.peak:
            self.peak, self.peak_procs = total, len(sizes)
            self.peak_breakdown = [(self._label(proc), rss) for proc, rss in sizes]

    def snapshot(self) -> list[tuple[str, int]]:
        """The process tree's RSS now, per process (MB), largest first."""
        out = []
        for proc in [self.me, *self.me.children(recursive=True)]:
            try:
                out.append((self._label(proc), round(_rss_mb(proc.memory_info().rss))))
            except self.psutil.Error:
                pass
        return sorted(out, key=lambda item: -item[1])

    def _label(self, proc) -> str:
        if proc.pid == self.me.pid:
            return "driver"
        try:
            return proc.name()
        except self.psutil.Error:
            return "?"

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                self.sample()
            except self.psutil.Error:
                pass
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


class PhaseClock:
    """Timestamps (seconds since ``simulate`` was called) of the driver-side phases.

    It wraps, in this process only, ``ray.init``, flowerbed's ``run_server``, the
    roster query and the per-round hook; nothing inside the Ray workers changes.
    """

    def __init__(self, trace: bool = False) -> None:
        self.t0 = time.perf_counter()
        self.wall0 = time.time()
        self.marks: dict[str, float] = {}
        self.hook_calls: list[float] = []
        self.trace = trace
        self.tasks: list[tuple[str, float, float]] = []  # (name, start, seconds)
        self.rss_after_last_round: list[tuple[str, int]] = []

    def start(self) -> None:
        self.t0, self.wall0 = time.perf_counter(), time.time()

    def grab_ray_timeline(self) -> None:
        """Every Ray task the actors ran so far, from Ray's task events (``--trace``)."""
        import ray

        time.sleep(1.5)  # task events reach the GCS about once a second
        for event in ray.timeline():
            if event.get("ph") == "X" and str(event.get("cat", "")).startswith("task::ClientAppActor"):
                self.tasks.append((event["name"], event["ts"] / 1e6 - self.wall0, event["dur"] / 1e6))

    def mark(self, name: str) -> None:
        self.marks.setdefault(name, time.perf_counter() - self.t0)

    def wrap(self, owner, attr: str, before: str | None, after: str | None) -> None:
        original = getattr(owner, attr)
        clock = self

        def wrapped(*a, **kw):
            if before:
                clock.mark(before)
            try:
                return original(*a, **kw)
            finally:
                if after:
                    clock.mark(after)

        setattr(owner, attr, wrapped)

    def install(self, sampler: "TreeRssSampler | None" = None) -> None:
        import ray

        from flowerbed.server import app as server_app
        from flowerbed.server.grid import RosterGrid

        self.wrap(ray, "init", "ray_init_start", "ray_init_end")
        self.wrap(server_app, "run_server", "server_start", "server_end")
        self.wrap(RosterGrid, "build_roster", "roster_start", "roster_end")
        hook_call = server_app.RoundHook.__call__
        clock = self

        def timed_hook(hook, server_round, arrays):
            result = hook_call(hook, server_round, arrays)
            clock.hook_calls.append(time.perf_counter() - clock.t0)
            if server_round == hook.scenario.rounds:  # after the round's time was taken
                if sampler is not None:
                    clock.rss_after_last_round = sampler.snapshot()
                if clock.trace:
                    clock.grab_ray_timeline()
            return result

        server_app.RoundHook.__call__ = timed_hook


def run_flowerbed(args: argparse.Namespace) -> dict:
    import resource

    from flowerbed.server.simulate import simulate

    sampler = TreeRssSampler(args.sample_interval)
    sampler.sample()
    rss_before = sampler.peak
    with tempfile.TemporaryDirectory(prefix="flowerbed-bench-") as tmp:
        scenario = build_scenario(args, args.clients[0], f"sqlite:///{tmp}/mlflow.db")
        clock = PhaseClock(trace=args.trace)
        clock.install(sampler)
        sampler.start()
        clock.start()
        summary = simulate(scenario, verbose=False, progress=None)
        total_s = time.perf_counter() - clock.t0
        sampler.stop()
    sampler.sample()
    history = {int(r): m for r, m in summary.history.items()}
    rounds = range(1, scenario.rounds + 1)
    return {
        "kind": "flowerbed",
        "clients": scenario.partition.num_clients,
        "total_s": total_s,
        "round_s": [history[r]["round_seconds"] for r in rounds],
        "history": {r: history[r] for r in rounds},
        "peak_rss_mb": _rss_mb(sampler.peak),
        "peak_procs": sampler.peak_procs,
        "peak_breakdown_mb": sorted(((name, round(_rss_mb(rss))) for name, rss in sampler.peak_breakdown),
                                    key=lambda item: -item[1]),
        "rss_samples": sampler.samples,
        "rss_before_mb": _rss_mb(rss_before),
        "driver_peak_rss_mb": _rss_mb(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024),
        "phases": clock.marks,
        "hook_calls": clock.hook_calls,
        "actor_tasks": clock.tasks,
        "rss_after_last_round_mb": clock.rss_after_last_round,
        "num_actors": int((os.cpu_count() or 1) // scenario.client.num_cpus),
    }


# --- the parent: run the workers, print the figures -------------------------------------


def worker_argv(args: argparse.Namespace, kind: str, clients: int, result: str) -> list[str]:
    argv = [sys.executable, str(Path(__file__).resolve()), "--worker", kind, "--result", result,
            "--clients", str(clients)]
    for name in ("rounds", "dataset", "model", "hidden", "data_root", "partition", "alpha", "seed",
                 "local_epochs", "batch_size", "lr", "num_cpus", "bare_threads", "sample_interval", "trace"):
        value = getattr(args, name)
        if value is True:
            argv.append(f"--{name.replace('_', '-')}")
        elif value is not None and value is not False:
            argv += [f"--{name.replace('_', '-')}", str(value)]
    return argv


def run_worker(args: argparse.Namespace, kind: str, clients: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="flowerbed-bench-") as tmp:
        result = Path(tmp) / "result.json"
        load = os.getloadavg()[0]
        # cwd: the temp dir. flowerbed's MLflow experiment has no artifact location, so
        # MLflow puts artifacts under ./mlruns of the working directory, whatever the
        # tracking URI; they must not land in the repository.
        proc = subprocess.run(worker_argv(args, kind, clients, str(result)), cwd=tmp,
                              capture_output=not args.show_output, text=True)
        if proc.returncode != 0 or not result.is_file():
            tail = "" if args.show_output else (proc.stdout + proc.stderr)[-4000:]
            raise SystemExit(f"{kind} run with {clients} clients failed (exit {proc.returncode})\n{tail}")
        out = json.loads(result.read_text())
        out["load_before"] = load
        return out


def fmt_times(times: list[float]) -> str:
    return " ".join(f"{t:.2f}" for t in times)


def report_size(bare: dict, flwr: dict, rounds: int) -> dict:
    n = bare["clients"]
    steady_b, steady_f = _steady(bare["round_s"]), _steady(flwr["round_s"])
    acc_b = bare["history"][str(rounds)]["global_accuracy"]
    acc_f = flwr["history"][str(rounds)]["global_accuracy"]
    print(f"\n=== {n} clients, {rounds} rounds ({bare['train_samples']} training samples) ===")
    print(f"bare      total {bare['total_s']:7.2f} s  (setup {bare['setup_s']:.2f} s: data, splits, "
          f"initial model; torch threads {bare['torch_threads']}; load avg before {bare['load_before']:.2f})")
    print(f"          rounds [s]: {fmt_times(bare['round_s'])}   steady (2+) {steady_b:.3f} s")
    print(f"          peak RSS {bare['peak_rss_mb']:.0f} MB (after imports {bare['rss_before_mb']:.0f} MB)")
    print(f"flowerbed total {flwr['total_s']:7.2f} s  (load avg before {flwr['load_before']:.2f})")
    print(f"          rounds [s]: {fmt_times(flwr['round_s'])}   steady (2+) {steady_f:.3f} s")
    print(f"          peak RSS, process tree {flwr['peak_rss_mb']:.0f} MB over {flwr['peak_procs']} processes "
          f"(driver alone {flwr['driver_peak_rss_mb']:.0f} MB; before simulate {flwr['rss_before_mb']:.0f} MB; "
          f"{flwr['rss_samples']} samples)")
    print("          at the peak [MB]: " + ", ".join(f"{name} {mb}" for name, mb in flwr["peak_breakdown_mb"]))
    if flwr.get("rss_after_last_round_mb"):
        after = flwr["rss_after_last_round_mb"]
        print(f"          after the last round [MB]: total {sum(mb for _, mb in after)}: "
              + ", ".join(f"{name} {mb}" for name, mb in after))
    phases = flwr["phases"]
    hooks = flwr["hook_calls"]
    if hooks:
        marks = sorted([*phases.items(), ("round0_eval_end", hooks[0]),
                        *((f"round{i}_end", t) for i, t in enumerate(hooks[1:], 1))],
                       key=lambda kv: kv[1])
        marks.append(("simulate_returned", flwr["total_s"]))
        print("          driver timeline [s since simulate()]: "
              + ", ".join(f"{name} {t:.2f}" for name, t in marks))
        before_round1 = hooks[0]
        after_last = flwr["total_s"] - hooks[-1]
        print(f"          outside the rounds: {before_round1:.2f} s before round 1 "
              f"(Ray start, actors, roster, MLflow run, round-0 eval), {after_last:.2f} s after the last")
    if flwr.get("actor_tasks"):
        print_actor_busy(flwr)
    print(f"ratio     total {flwr['total_s'] / bare['total_s']:.2f}x   steady-state round "
          f"{steady_f / steady_b:.2f}x")
    for key in ("global_accuracy", "train_loss", "personalized_accuracy"):
        b = bare["history"][str(rounds)].get(key)
        f = flwr["history"][str(rounds)].get(key)
        if b is not None and f is not None:
            print(f"final {key:<22} bare {b:.4f}   flowerbed {f:.4f}   diff {abs(b - f):.2e}")
    agree = abs(acc_b - acc_f) <= ACCURACY_TOLERANCE
    if acc_b == acc_f:
        print("final accuracies identical: the two runs did the same work")
    elif agree:
        print(f"final accuracies agree within {ACCURACY_TOLERANCE} (bit-identical only with "
              "--bare-threads equal to the clients' thread count)")
    else:
        print(f"ACCURACIES DIFFER by more than {ACCURACY_TOLERANCE}: the workloads are not the same")
    return {"clients": n, "bare_total": bare["total_s"], "flwr_total": flwr["total_s"],
            "bare_steady": steady_b, "flwr_steady": steady_f,
            "bare_mem": bare["peak_rss_mb"], "flwr_mem": flwr["peak_rss_mb"],
            "acc_b": acc_b, "acc_f": acc_f, "agree": agree}


def print_actor_busy(flwr: dict) -> None:
    """Where the actors' time went, per phase, from Ray's task events (``--trace``)."""
    hooks, phases, actors = flwr["hook_calls"], flwr["phases"], flwr["num_actors"]
    inits = [(start, dur) for name, start, dur in flwr["actor_tasks"] if name == "__init__"]
    runs = [(start, dur) for name, start, dur in flwr["actor_tasks"] if name == "run"]
    if inits:
        print(f"          actors: __init__ started {min(s for s, _ in inits):.2f}-{max(s for s, _ in inits):.2f} s, "
              f"took {max(d for _, d in inits):.2f} s")
    windows = [("roster", phases.get("roster_start", 0.0), phases.get("roster_end", hooks[0]))]
    windows += [(f"round {r}", hooks[r - 1], hooks[r]) for r in range(1, len(hooks))]
    for label, lo, hi in windows:
        inside = [(s, d) for s, d in runs if lo <= s < hi]
        if not inside:
            continue
        busy = sum(d for _, d in inside)
        span = hi - lo
        print(f"          {label:>8}: {len(inside):4d} ClientApp calls, busy {busy:6.2f} s "
              f"(max call {max(d for _, d in inside):.2f} s, first starts +{min(s for s, _ in inside) - lo:.2f} s) "
              f"in {span:.2f} s wall: actors {busy / (span * actors):.0%} busy")


def print_table(rows: list[dict]) -> None:
    print("\n" + "-" * 104)
    print(f"{'clients':>7} | {'total bare':>10} {'flowerbed':>9} {'ratio':>6} | "
          f"{'round bare':>10} {'flowerbed':>9} {'ratio':>6} | {'peak MB bare':>12} {'flowerbed':>9} | "
          f"{'acc bare':>8} {'flowerbed':>9}")
    for r in rows:
        print(f"{r['clients']:>7} | {r['bare_total']:>9.2f}s {r['flwr_total']:>8.2f}s "
              f"{r['flwr_total'] / r['bare_total']:>5.2f}x | {r['bare_steady']:>9.3f}s {r['flwr_steady']:>8.3f}s "
              f"{r['flwr_steady'] / r['bare_steady']:>5.2f}x | {r['bare_mem']:>12.0f} {r['flwr_mem']:>9.0f} | "
              f"{r['acc_b']:>8.4f} {r['acc_f']:>9.4f}{'' if r['agree'] else '  DIFFER'}")
    print("-" * 104)
    print("round = steady-state mean of rounds 2+; peak MB: bare = process peak RSS, "
          "flowerbed = peak summed RSS of the process tree (pages shared between processes count in each)")


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
    p.add_argument("--seed", type=int, default=0, help="scenario seed")
    p.add_argument("--local-epochs", type=int, default=1, help="client.local_epochs")
    p.add_argument("--batch-size", type=int, default=32, help="client.batch_size")
    p.add_argument("--lr", type=float, default=0.05, help="client.lr (SGD)")
    p.add_argument("--num-cpus", type=float, default=1.0, help="Ray CPUs per simulated client")
    p.add_argument("--bare-threads", type=int, default=None,
                   help="torch intra-op threads of the bare loop; default: as many as a flowerbed "
                        "client gets (int(--num-cpus)), which makes the results bit-identical; "
                        "0 = torch's default (all cores)")
    p.add_argument("--sample-interval", type=float, default=0.2, help="RSS sampling period, seconds")
    p.add_argument("--trace", action="store_true",
                   help="also read Ray's task events: how busy the actors were in each phase "
                        "(adds ~1.5 s after the last round, outside the round times)")
    p.add_argument("--only", choices=["bare", "flowerbed"], help="run one side only (no ratios)")
    p.add_argument("--show-output", action="store_true", help="let the workers print to the terminal")
    p.add_argument("--json", help="also write every run's raw figures to this file")
    p.add_argument("--worker", choices=["bare", "flowerbed"], help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.data_root = resolve_root(args.data_root)
    if args.worker:
        out = run_bare(args) if args.worker == "bare" else run_flowerbed(args)
        Path(args.result).write_text(json.dumps(out))
        return 0

    print(f"sim_overhead: {args.dataset}/{args.model}(hidden {args.hidden}), "
          f"{args.partition}{f' alpha {args.alpha}' if args.partition == 'dirichlet' else ''}, "
          f"{args.rounds} rounds, full participation, {args.local_epochs} local epoch(s), "
          f"batch {args.batch_size}, SGD lr {args.lr}; {os.cpu_count()} CPUs, "
          f"{args.num_cpus} CPU(s) per Ray client "
          f"(-> {int((os.cpu_count() or 1) // args.num_cpus)} Ray actors)", flush=True)
    rows, raw = [], []
    for clients in args.clients:
        sides = {}
        for kind in ("bare", "flowerbed"):
            if args.only and kind != args.only:
                continue
            print(f"[{clients} clients] running {kind} ...", flush=True)
            sides[kind] = run_worker(args, kind, clients)
            print(f"[{clients} clients] {kind}: {sides[kind]['total_s']:.2f} s", flush=True)
        raw.append(sides)
        if len(sides) == 2:
            rows.append(report_size(sides["bare"], sides["flowerbed"], args.rounds))
        else:
            (side,) = sides.values()
            print(json.dumps({k: v for k, v in side.items() if k != "history"}, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(raw, indent=1))
    if rows:
        print_table(rows)
    return 0 if all(r["agree"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
