"""The feature cache: runs of a cell that outgrow it still hit, and its budget fails cleanly."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bench.cli import main
from bench.probe.feature_cache import BUDGET_ENV, DEFAULT_BUDGET_MB, FeatureCache, budget_from_env
from tests.conftest import TINY_SWEEP, write_sweep

ENTRY_BYTES = 1024  # one window's maps: 512 float16 values


def _entry() -> tuple[list[torch.Tensor], float]:
    return [torch.zeros(2, 16, 16, dtype=torch.float16)], 1.0


def _one_run(cache: FeatureCache, group: str, windows: int) -> int:
    """Read `windows` windows in order as a run does (put on a miss); the number of hits."""
    hits = 0
    for i in range(windows):
        if cache.get((group, i)) is not None:
            hits += 1
        else:
            cache.put((group, i), _entry(), group=group)
    return hits


def test_runs_larger_than_the_budget_keep_hitting_what_was_admitted_first() -> None:
    cache = FeatureCache(10 * ENTRY_BYTES)
    assert _one_run(cache, "mdm", 15) == 0
    # A plain LRU cache would hit nothing here: every miss evicts the window read next.
    assert [_one_run(cache, "mdm", 15) for _ in range(3)] == [10, 10, 10]
    assert cache.used <= cache.budget and len(cache) == 10


def test_a_run_that_fits_hits_everything_after_the_first() -> None:
    cache = FeatureCache(10 * ENTRY_BYTES)
    assert [_one_run(cache, "mdm", 8) for _ in range(3)] == [0, 8, 8]


def test_a_new_group_evicts_the_old_groups_least_recently_used_entries() -> None:
    cache = FeatureCache(10 * ENTRY_BYTES)
    _one_run(cache, "mdm", 10)
    cache.get(("mdm", 0))  # recently used: the last of mdm's entries to go
    assert _one_run(cache, "ddpm", 9) == 0
    assert cache.get(("mdm", 0)) is not None
    assert all(cache.get(("mdm", i)) is None for i in range(1, 10))
    assert _one_run(cache, "ddpm", 9) == 9 and cache.used == cache.budget


def test_entries_are_kept_once_and_an_oversized_one_not_at_all() -> None:
    cache = FeatureCache(ENTRY_BYTES)
    assert cache.put("a", _entry()) and not cache.put("a", _entry())
    assert cache.used == ENTRY_BYTES
    big = [torch.zeros(2, 16, 17, dtype=torch.float16)], 1.0
    assert not FeatureCache(ENTRY_BYTES).put("b", big)
    assert not FeatureCache(0).put("c", _entry())


def test_the_budget_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(BUDGET_ENV, raising=False)
    assert budget_from_env() == DEFAULT_BUDGET_MB * 2**20
    monkeypatch.setenv(BUDGET_ENV, "0")
    assert budget_from_env() == 0
    monkeypatch.setenv(BUDGET_ENV, "512")
    assert budget_from_env() == 512 * 2**20 == FeatureCache().budget


@pytest.mark.parametrize("value", ["lots", "-1", "2.5"])
def test_a_bad_budget_is_one_line_before_anything_is_written(
        tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(BUDGET_ENV, value)
    config = write_sweep(tmp_path, TINY_SWEEP.replace('output = "results"', 'output = "out"'))
    assert main(["run", "--config", str(config), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"bench: error: environment: {BUDGET_ENV}: expected a whole number of MiB >= 0, got {value!r}"
    assert not (tmp_path / "out").exists() and not (tmp_path / "results").exists()
