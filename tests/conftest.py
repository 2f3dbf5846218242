"""Shared fixtures: an isolated cache folder and helpers to write small sweep files."""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
GLAS = SHARED / "data" / "GlaS"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Generated data (synthetic-glands) goes to one per-session temp cache, never ~/.cache."""
    cache = tmp_path_factory.getbasetemp() / "bench-cache"
    monkeypatch.setenv("BENCH_CACHE", str(cache))


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One torch intra-op thread: tiny models gain nothing from two, and on a loaded 2-core box
    two threads spin-wait against each other (10-100x slower)."""
    with torch_threads(1):
        yield


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
