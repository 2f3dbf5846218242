"""Shared fixtures: an isolated cache folder and helpers to write small sweep files."""
from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

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


def sweep_toml(methods: Sequence[str], seeds: Sequence[int] = (0,), fractions: Sequence[float] = (1.0,),
               dataset: str = "synthetic-glands", params: dict[str, dict[str, Any]] | None = None,
               preset: str = "tiny", output: str = "results", root: str | None = None) -> str:
    """A sweep file's text: one data set, `[params.METHOD]` tables from `params`.

    Values are written as JSON, which TOML reads the same for strings, numbers, booleans and lists.
    """
    lines = [f"preset = {json.dumps(preset)}", f"seeds = {json.dumps(list(seeds))}",
             f"output = {json.dumps(output)}", f"methods = {json.dumps(list(methods))}", "",
             "[[datasets]]", f"name = {json.dumps(dataset)}", f"label_fractions = {json.dumps(list(fractions))}"]
    if root is not None:
        lines.append(f"root = {json.dumps(root)}")
    for method, table in (params or {}).items():
        lines += ["", f"[params.{method}]"] + [f"{key} = {json.dumps(value)}" for key, value in table.items()]
    return "\n".join(lines) + "\n"


def make_sweep(folder: Path, methods: Sequence[str], **kwargs: Any) -> Path:
    """Write `sweep_toml(methods, **kwargs)` to folder/bench.toml and return its path."""
    return write_sweep(folder, sweep_toml(methods, **kwargs))


TINY_SWEEP = """
preset = "tiny"
seeds = [0, 1]
output = "results"
methods = ["ddpm", "unet"]

[[datasets]]
name = "synthetic-glands"
label_fractions = [1.0, 0.1]
"""
