"""A federated round over gRPC against the same round in simulation, side by side.

The quickstart (digits, MLP, FedAvg) with ``--clients`` partitions and ``--rounds``
rounds, three ways, one after the other on this machine:

(a) simulation: ``flowerbed run sims/quickstart.toml`` (Flower's Simulation Engine);
(b) gRPC, Flower's defaults: ``deploy/superlink.sh --insecure`` and one
    ``deploy/supernode.sh --insecure`` per partition on loopback, with
    ``FLOWERBED_CLIENTAPP=fresh`` (a new ``flwr-clientapp`` process per message),
    ``FLOWERBED_FAST_POLL=0`` (the SuperNode's 3 s / 0.5 s waits) and
    ``FLOWERBED_FLOWER_POLLING=1`` (Flower's grid loop, 3 s between reply pulls):
    how flowerbed deployed before;
(c) gRPC, the scripts' defaults: one warm ClientApp worker per SuperNode, the
    SuperNode's waits shortened while busy, flowerbed's reply polling.

Each run logs ``round_seconds`` (the ServerApp's wall time per round, its evaluation
included) to a throwaway MLflow store; printed: every round's seconds, the steady-state
median (rounds 2+) and its ratio to the simulation's. The global accuracy of the last
round is printed too: the three train the same model on the same data, (a) and (c)
to the same digits, (b) likewise (same seeds), so a mismatch means a broken run.

    .venv/bin/python bench/grpc_round.py                 # 2 clients, 5 rounds
    .venv/bin/python bench/grpc_round.py --clients 3 --rounds 8
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import tomli_w
from mlflow.tracking import MlflowClient

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def free_ports(count: int) -> list[int]:
    socks = [socket.socket() for _ in range(count)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def wait_port(port: int, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"nothing listens on {port}")


def round_seconds(tracking_uri: str, experiment: str) -> tuple[dict[int, float], float]:
    client = MlflowClient(tracking_uri=tracking_uri)
    run = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])[0]
    seconds = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "round_seconds")}
    return seconds, run.data.metrics["global_accuracy"]


def simulation(work: Path, clients: int, rounds: int) -> tuple[dict[int, float], float]:
    uri = f"sqlite:///{work / 'sim.db'}"
    subprocess.run([str(BIN / "flowerbed"), "run", str(REPO / "sims" / "quickstart.toml"),
                    *[arg for item in (f"rounds={rounds}", f"partition.num_clients={clients}",
                                       f"sampling.min_clients={clients}", f"mlflow.tracking_uri='{uri}'",
                                       "mlflow.experiment='sim'", "checkpoint.every=0") for arg in ("--set", item)]],
                   check=True, cwd=work, stdout=subprocess.DEVNULL)
    return round_seconds(uri, "sim")


def grpc(work: Path, clients: int, rounds: int, defaults: bool) -> tuple[dict[int, float], float]:
    name = "grpc-scripts" if defaults else "grpc-flower"
    home = work / name
    home.mkdir()
    http, fleet = free_ports(2)
    env = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1",
           "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "FLOWERBED_HTTP_PORT": str(http),
           "FLOWERBED_FLEET_ADDRESS": f"127.0.0.1:{fleet}", "OMP_NUM_THREADS": "1"}
    if not defaults:
        env.update(FLOWERBED_CLIENTAPP="fresh", FLOWERBED_FAST_POLL="0", FLOWERBED_FLOWER_POLLING="1")
    procs = []

    def start(args: list[str], log: str, extra: dict[str, str] | None = None) -> subprocess.Popen:
        out = (home / log).open("wb")
        proc = subprocess.Popen(args, cwd=home, env={**env, **(extra or {})}, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        procs.append(proc)
        return proc

    try:
        start(["bash", str(REPO / "deploy" / "superlink.sh"), "--insecure"], "superlink.log",
              {"FLWR_HOME": str(home / "link")})
        wait_port(http)
        wait_port(fleet)
        for p in range(clients):
            start(["bash", str(REPO / "deploy" / "supernode.sh"), "--insecure", str(p), str(clients),
                   f"127.0.0.1:{fleet}"], f"node{p}.log",
                  {"FLWR_HOME": str(home / f"node{p}"), "FLOWERBED_NODE_PORT": str(free_ports(1)[0])})
        cli_home = home / "cli"
        cli_home.mkdir()
        (cli_home / "config.toml").write_text(tomli_w.dumps({"superlink": {"default": "b", "b": {
            "address": f"127.0.0.1:{http}", "insecure": True}}}))
        uri = f"sqlite:///{home / 'mlflow.db'}"
        (home / "rc.toml").write_text(tomli_w.dumps({
            "rounds": rounds, "partition.num_clients": clients, "sampling.min_clients": clients,
            "mlflow.tracking_uri": uri, "mlflow.experiment": name}))
        subprocess.run([str(BIN / "flwr"), "run", str(REPO), "b", "--run-config", str(home / "rc.toml"), "--stream"],
                       check=True, env={**env, "FLWR_HOME": str(cli_home)}, cwd=REPO, stdout=subprocess.DEVNULL,
                       timeout=3600)
        return round_seconds(uri, name)
    finally:
        for proc in procs:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        pid_file = home / "superexec.pid"
        if pid_file.is_file():
            try:
                os.killpg(int(pid_file.read_text()), signal.SIGTERM)
            except ProcessLookupError:
                pass
        time.sleep(2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="grpc-round-") as tmp:
        work = Path(tmp)
        results = {"simulation": simulation(work, args.clients, args.rounds),
                   "gRPC, Flower's defaults": grpc(work, args.clients, args.rounds, defaults=False),
                   "gRPC, deploy/ scripts": grpc(work, args.clients, args.rounds, defaults=True)}
    steady = {name: statistics.median(v for r, v in seconds.items() if r >= 2)
              for name, (seconds, _) in results.items()}
    print(f"quickstart, {args.clients} clients, {args.rounds} rounds; round_seconds per round "
          f"(steady state = median of rounds 2+)")
    print(f"{'':26} {'rounds':>40} {'steady s':>9} {'x sim':>7} {'final acc':>10}")
    for name, (seconds, accuracy) in results.items():
        per_round = " ".join(f"{seconds[r]:.2f}" for r in sorted(seconds))
        print(f"{name:26} {per_round:>40} {steady[name]:9.2f} {steady[name] / steady['simulation']:7.1f} "
              f"{accuracy:10.4f}")


if __name__ == "__main__":
    main()
