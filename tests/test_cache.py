"""Derived files never land in the data root, even where it is writable (as for root)."""

from __future__ import annotations

from flowerbed.sims.cache import CACHE_ENV, writable_cache


def test_the_cache_is_outside_a_writable_data_root_and_apart_per_root(tmp_path, monkeypatch):
    monkeypatch.delenv(CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    first, second = tmp_path / "data", tmp_path / "other" / "data"
    first.mkdir()
    second.mkdir(parents=True)
    cache = writable_cache(first)
    assert cache.is_dir() and (tmp_path / "xdg" / "flowerbed") in cache.parents
    assert first not in cache.parents and list(first.iterdir()) == []
    assert writable_cache(second) != cache  # same folder name, another root
    assert writable_cache(first) == cache  # and stable


def test_the_environment_variable_chooses_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "mine"))
    assert writable_cache(tmp_path / "data") == tmp_path / "mine"
