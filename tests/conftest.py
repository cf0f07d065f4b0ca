"""Test settings: datasets from ../shared/data (read-only), no MLflow store in the repo."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def pytest_configure(config: pytest.Config) -> None:
    if SHARED_DATA.is_dir():
        os.environ.setdefault("FLOWERBED_DATA_ROOT", str(SHARED_DATA))


@pytest.fixture(autouse=True)
def _run_in_tmp(tmp_path, monkeypatch):
    """A relative ``sqlite:///mlflow.db`` or ``./mlruns`` lands in the test's tmp dir."""
    monkeypatch.chdir(tmp_path)


requires_shared_data = pytest.mark.skipif(
    not SHARED_DATA.is_dir(), reason=f"{SHARED_DATA} (the project's shared datasets) is absent"
)
