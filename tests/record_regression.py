"""Record ``tests/data/regression_metrics_<CPU capability>_<kernel fingerprint>.json``: the
per-round metrics of every case of ``test_behaviour_unchanged.py`` on this machine's CPU
kernels.

Floating-point results depend on the kernels PyTorch dispatches to (AVX2 and AVX512 sum
in different orders, and so do CPU generations), so each kind of CPU needs its own
recording. Record
from the commit whose behaviour the test should hold, e.g. a ``git archive`` of it on
``PYTHONPATH`` (its ``flowerbed`` package and scenario files are the ones run):

    PYTHONPATH=/tmp/snapshot .venv/bin/python tests/record_regression.py COMMIT
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from inprocess import run_in_process  # noqa: E402
from test_behaviour_unchanged import CASES, RECORDED_ROUNDS, RECORDED_SEED, kernel_fingerprint  # noqa: E402

import flowerbed  # noqa: E402
from flowerbed.server.cli import quiet_logs  # noqa: E402
from flowerbed.sims.config import load_scenario  # noqa: E402


def main() -> int:
    quiet_logs()
    sims = Path(flowerbed.__file__).parent / "sims"
    capability = torch.backends.cpu.get_cpu_capability()
    fingerprint = kernel_fingerprint()
    out = {"rounds": RECORDED_ROUNDS, "seed": RECORDED_SEED, "cpu_capability": capability,
           "kernel_fingerprint": fingerprint,
           "commit": sys.argv[1] if len(sys.argv) > 1 else "working tree", "cases": {}}
    for case, overrides in CASES.items():
        file = case.split("/")[0]
        uri = f"sqlite:////tmp/record_regression_{capability}.db"
        summary, _ = run_in_process(load_scenario(sims / f"{file}.toml", [
            *overrides, f"rounds={RECORDED_ROUNDS}", f"seed={RECORDED_SEED}", f"mlflow.tracking_uri='{uri}'"]))
        out["cases"][case] = {"file": file, "history": {str(r): m for r, m in summary.history.items()}}
        print(case, flush=True)
    path = Path(__file__).parent / "data" / f"regression_metrics_{capability}_{fingerprint}.json"
    path.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
