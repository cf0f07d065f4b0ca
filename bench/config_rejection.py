"""How long `flowerbed run` takes to reject each bad input of the config fuzz
(tests/config_variants.py), one fresh process each, as a user would meet it: wall
seconds from start to exit, and the exit code (a benchmark, not a test).

    .venv/bin/python bench/config_rejection.py            # every case
    .venv/bin/python bench/config_rejection.py --slowest 10
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from config_variants import variants  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slowest", type=int, default=10, help="list this many slowest cases")
    args = parser.parse_args()
    flowerbed = Path(sys.executable).parent / "flowerbed"
    timings: list[tuple[float, str, int]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, argv, _ in variants(Path(tmp)):
            started = time.perf_counter()
            done = subprocess.run([str(flowerbed), "run", *argv], capture_output=True, text=True, cwd=tmp)
            timings.append((time.perf_counter() - started, name, done.returncode))
    seconds = [t for t, _, _ in timings]
    print(f"{len(timings)} cases: exit 2 in {sum(code == 2 for *_, code in timings)}; wall seconds median "
          f"{statistics.median(seconds):.2f}, max {max(seconds):.2f}, over 3 s: {sum(t > 3 for t in seconds)}")
    for t, name, code in sorted(timings, reverse=True)[:args.slowest]:
        print(f"  {t:5.2f} s  exit {code}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
