"""The config fuzz: over 100 generated bad inputs to `flowerbed run` (wrong types, booleans
for numbers, values out of range, unknown keys at every level, unknown names, empty,
binary and broken files, malformed --set, impossible partitions, resources this
machine lacks, unusable tracking stores) each end with exit code 2 and one line that
names the bad key or file, before anything starts: no MLflow store written, and neither
MLflow, Ray nor Flower's simulation loaded (what made a rejection take 5-40 s;
bench/config_rejection.py times each case in its own process)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from config_variants import variants

REPO = Path(__file__).resolve().parents[1]

# Runs every case in one fresh interpreter, in-process, and reports what happened.
PROBE = """
import contextlib, io, json, sys
from pathlib import Path
sys.path.insert(0, {tests!r})
from config_variants import variants
from flowerbed.server.cli import main

out = []
for name, argv, names in variants(Path({tmp!r})):
    if "--resume" in argv:
        continue  # resuming opens the store it resumes in: below
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(["run", *argv])
        except SystemExit as exit_:
            code = exit_.code
    out.append([name, code, err.getvalue()])
loaded = [m for m in ("mlflow", "ray", "flwr.simulation") if m in sys.modules]
print(json.dumps({{"cases": out, "loaded": loaded}}))
"""


def test_every_bad_input_is_one_line_and_exit_2_before_anything_starts(tmp_path):
    cases = variants(tmp_path)
    assert len(cases) >= 80
    probe = subprocess.run([sys.executable, "-c", PROBE.format(tests=str(REPO / "tests"), tmp=str(tmp_path))],
                           capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert probe.returncode == 0, probe.stderr[-3000:]
    report = json.loads(probe.stdout.strip().splitlines()[-1])
    expected = {name: names for name, argv, names in cases}
    assert len(report["cases"]) >= 80
    for name, code, stderr in report["cases"]:
        lines = stderr.strip().splitlines()
        assert code == 2 and len(lines) == 1, f"{name}: exit {code}, stderr:\n{stderr}"
        assert lines[0].startswith("flowerbed: error: ") and expected[name] in lines[0], f"{name}: {lines[0]}"
    assert report["loaded"] == []
    assert not list(tmp_path.rglob("*.db")) and not (tmp_path / "mlruns").exists()


def test_an_impossible_partition_says_which_settings_to_change(tmp_path):
    (name, argv, _), = [c for c in variants(tmp_path) if c[0] == "200 clients on digits"]
    # 200 x min_partition_size 10 > digits' 1,437 training samples: no draw can succeed.
    done = subprocess.run([str(Path(sys.executable).parent / "flowerbed"), "run", *argv], capture_output=True,
                          text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 2
    assert "lower partition.num_clients or partition.min_partition_size" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_resume_of_a_store_or_run_that_is_not_there_is_a_clean_error(tmp_path, capsys):
    from flowerbed.server.cli import main

    for argv in (["--resume", "last", "--tracking-uri", f"sqlite:///{tmp_path / 'none.db'}"],
                 ["sims/quickstart.toml", "--resume", "last"]):
        assert main(["run", *argv]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "--resume" in err[0]
    assert not (tmp_path / "none.db").exists()
