"""Clients on fractional GPUs against the same clients on CPU: round time and GPU use.

For each scenario (the quickstart, and FedLoGe's long-tailed Fashion-MNIST, whose
server-side head / middle / tail scores once failed on a GPU), 20 clients, run twice
through ``flowerbed.server.simulate.simulate``: ``client.num_gpus = --gpu-share``
(four clients to a GPU at 0.25) and ``client.num_gpus = 0``. Prints per run the
steady round (mean of rounds 2+), how many clients reported training on a GPU
(``clients_on_gpu``), the GPU utilisation sampled with ``nvidia-smi`` every 0.5 s
(mean and peak over the rounds) and the CPU/GPU round ratio. Needs a CUDA build of
torch and a GPU; on a machine without one it stops with flowerbed's own refusal.

    .venv/bin/python bench/gpu_round.py --data-root ../shared/data
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCENARIOS = {"quickstart": ["partition.num_clients=20", "rounds=4"],
             "fedloge_fmnist_lt": ["partition.num_clients=20", "rounds=4", "client.local_epochs=1"]}


class GpuSampler(threading.Thread):
    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.samples: list[float] = []
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.is_set():
            out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True)
            if out.returncode == 0 and out.stdout.strip():
                self.samples.append(max(float(v) for v in out.stdout.split()))
            self.stop_event.wait(0.5)


def run(file: str, overrides: list[str], gpus: float, root: str, tmp: str) -> dict:
    from flowerbed.server.simulate import simulate
    from flowerbed.sims.config import load_scenario

    scenario = load_scenario(REPO / "sims" / f"{file}.toml", [
        *overrides, f"client.num_gpus={gpus}", f"dataset.root='{root}'",
        f"mlflow.tracking_uri='sqlite:///{tmp}/mlflow.db'"])
    sampler = GpuSampler() if shutil.which("nvidia-smi") else None
    if sampler:
        sampler.start()
    summary = simulate(scenario, progress=None)
    if sampler:
        sampler.stop_event.set()
        sampler.join()
    rounds = [summary.history[r]["round_seconds"] for r in range(1, scenario.rounds + 1)]
    util = sampler.samples if sampler else []
    return {"steady": sum(rounds[1:]) / max(len(rounds) - 1, 1), "rounds": rounds,
            "on_gpu": summary.history[scenario.rounds].get("clients_on_gpu", 0.0),
            "accuracy": summary.history[scenario.rounds].get("global_accuracy"),
            "util_mean": sum(util) / len(util) if util else float("nan"), "util_peak": max(util, default=float("nan"))}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", default="../shared/data")
    p.add_argument("--gpu-share", type=float, default=0.25, help="client.num_gpus of the GPU runs")
    args = p.parse_args()
    root = str(Path(args.data_root).resolve())
    with tempfile.TemporaryDirectory() as tmp:
        for file, overrides in SCENARIOS.items():
            gpu = run(file, overrides, args.gpu_share, root, tmp)
            cpu = run(file, overrides, 0.0, root, tmp)
            print(f"{file}: GPU ({args.gpu_share} each) steady round {gpu['steady']:.3f} s, {gpu['on_gpu']:.0f} clients "
                  f"on GPU, utilisation mean {gpu['util_mean']:.0f}% peak {gpu['util_peak']:.0f}%, accuracy "
                  f"{gpu['accuracy']:.4f} | CPU steady round {cpu['steady']:.3f} s, accuracy {cpu['accuracy']:.4f} | "
                  f"CPU/GPU round {cpu['steady'] / gpu['steady']:.2f}x", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
