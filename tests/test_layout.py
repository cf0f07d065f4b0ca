"""Packaging: every top-level folder installs under the `flowerbed` namespace only."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_wheel_installs_only_the_flowerbed_namespace(tmp_path):
    # Build from a copy of the checkout's own files, so no stale build/ folder leaks in.
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                           cwd=REPO, check=True, capture_output=True, text=True).stdout.split()
    source = tmp_path / "src"
    for name in files:
        if (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path), str(source)],
        check=True, capture_output=True,
    )
    (wheel,) = tmp_path.glob("flowerbed-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names}
    assert tops == {"flowerbed", next(t for t in tops if t.endswith(".dist-info"))}
    packages = {p.parent.relative_to(REPO).as_posix() for p in REPO.glob("*/**/__init__.py")
                if p.parts[len(REPO.parts)] in ("server", "client", "strategies", "sims")}
    assert {"server", "client", "strategies", "sims", "strategies/fedpub"} <= packages
    for package in packages:  # every sub-package, each strategy's folder too
        assert f"flowerbed/{package}/__init__.py" in names, package
    assert "flowerbed/sims/quickstart.toml" in names
    assert not any(name.startswith("flowerbed/tests/") or "/.venv/" in name for name in names)


def test_console_script_points_into_the_namespace():
    from importlib.metadata import entry_points

    (script,) = [e for e in entry_points(group="console_scripts") if e.name == "flowerbed"]
    assert script.value == "flowerbed.server.cli:main"
