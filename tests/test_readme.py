"""The README's two commands are what CI runs."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_commands_verbatim():
    readme = (REPO / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)\n```", readme, flags=re.S)
    setup, tests = blocks[0].strip(), blocks[1].strip()
    assert "torch==2.13.0" in setup and setup.index("torch==2.13.0") < setup.index("pip install -e")
    assert "flowerbed run sims/quickstart.toml" in setup
    ci_lines = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()]
    assert setup in ci_lines
    assert tests in ci_lines
