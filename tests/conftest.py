"""Shared fixtures: an isolated cache folder and helpers to write small sweep files."""
from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
GLAS = SHARED / "data" / "GlaS"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Generated data (synthetic-glands) goes to one per-session temp cache, never ~/.cache."""
    cache = tmp_path_factory.getbasetemp() / "bench-cache"
    monkeypatch.setenv("BENCH_CACHE", str(cache))


def write_sweep(folder: Path, body: str) -> Path:
    path = folder / "bench.toml"
    path.write_text(body)
    return path


TINY_SWEEP = """
preset = "tiny"
seeds = [0, 1]
output = "results"
methods = ["ddpm", "unet"]

[[datasets]]
name = "synthetic-glands"
label_fractions = [1.0, 0.1]
"""
