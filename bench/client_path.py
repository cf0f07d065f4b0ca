"""The ClientApp path without Ray: the same scenario as ``sim_overhead.py``, every
message handled in this process on the in-process grid of ``tests/inprocess.py``
(flowerbed's real ServerApp logic and ClientApp, one thread, torch on one thread).
Its steady round, set against the bare loop's and the actor engine's from
``sim_overhead.py``, splits flowerbed's per-message cost into the ClientApp/server
path (here) and Ray's calls (the rest).

    .venv/bin/python bench/client_path.py --clients 1000 --fraction 0.1
    .venv/bin/python bench/client_path.py --clients 100
"""

from __future__ import annotations

import logging
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests")]

import sim_overhead  # noqa: E402 - the same scenario, the same arguments


def main() -> int:
    import torch
    from inprocess import run_in_process

    args = sim_overhead.parse_args()
    args.data_root = sim_overhead.resolve_root(args.data_root)
    torch.set_num_threads(max(1, int(args.num_cpus)))  # a flowerbed client's threads
    logging.getLogger("flwr").setLevel(logging.ERROR)
    for clients in args.clients:
        with tempfile.TemporaryDirectory() as tmp:
            scenario = sim_overhead.build_scenario(args, clients, f"sqlite:///{tmp}/mlflow.db")
            summary, _ = run_in_process(scenario)
        rounds = [summary.history[r]["round_seconds"] for r in range(1, scenario.rounds + 1)]
        messages = sum(len(summary.client_metrics[2].get(kind, {})) for kind in ("train", "evaluate"))
        steady = sim_overhead._steady(rounds)
        print(f"{clients} clients, fraction {args.fraction}: in-process rounds [s] "
              f"{' '.join(f'{t:.3f}' for t in rounds)}; steady {steady:.3f} s for {messages} messages "
              f"({1000 * steady / messages:.2f} ms a message)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
