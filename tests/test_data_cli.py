"""`flowerbed data` shows what each scenario file gives each client."""

from __future__ import annotations

from pathlib import Path

import pytest

from flowerbed.server.cli import main

from conftest import requires_shared_data

SIMS = Path(__file__).resolve().parents[1] / "sims"

# One scenario file per partition kind (and the few-label split on top of Dirichlet).
CASES = [
    ("quickstart", []),
    ("fedloge_fmnist_lt", []),
    ("ggeur_officecaltech_lds", []),
    ("fraug_mnist_usps", []),
    ("fedlabel_usps", []),
    ("fedpub_cora_disjoint10", []),
    ("fedpub_cora_overlap30", []),
    ("ggeur_fmnist_effnet", ["--set", "dataset.train_per_class=20", "--set", "dataset.test_per_class=2"]),
]


def test_every_scenario_file_is_valid():
    from flowerbed.sims.config import load_scenario

    files = sorted(SIMS.glob("*.toml"))
    assert len(files) >= 15
    for path in files:
        load_scenario(path)


@requires_shared_data
@pytest.mark.parametrize("name,extra", CASES, ids=[c[0] for c in CASES])
def test_data_prints_one_line_per_client_and_writes_the_heatmap(name, extra, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FLOWERBED_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "heat.png"
    assert main(["data", str(SIMS / f"{name}.toml"), "--output", str(out), *extra]) == 0
    printed = capsys.readouterr().out.splitlines()
    from flowerbed.sims.config import load_scenario

    clients = load_scenario(SIMS / f"{name}.toml").partition.num_clients
    rows = [line for line in printed if len(line.split()) > 2 and line.split()[0].isdigit() and line.split()[1].isdigit()]
    assert len(rows) == clients
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    header = printed[0]
    if name.startswith("fedpub"):
        assert "nodes" in header and "edges" in header and "label_entropy" in header
    if name.startswith(("ggeur_officecaltech", "fraug")):
        assert "domain" in header
    if name == "fedlabel_usps":
        assert all(int(r.split()[2]) > int(r.split()[1]) for r in rows)  # unlabeled > labelled


def test_heatmap_columns_put_each_class_once_in_its_group_span():
    from flowerbed.sims.stats import group_columns

    groups = {"head": [4, 0], "middle": [2], "tail": [1, 3, 5]}
    order, spans = group_columns(6, groups)
    assert sorted(order) == list(range(6))
    assert spans == [("head", 0, 2), ("middle", 2, 3), ("tail", 3, 6)]
    for name, start, end in spans:
        assert set(order[start:end]) == set(groups[name])
    assert group_columns(3, {}) == ([0, 1, 2], [])
