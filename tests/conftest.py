"""Shared fixtures: an isolated cache folder, helpers to write small sweep files, and MoNuSeg's
release format (LZW TIFFs with Aperio annotation XML) for data that has no real copy here."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import pytest
import torch
from PIL import Image

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


def tiny_run_methods(item: pytest.Item) -> list[str]:
    """The methods a test reads from `tiny_records`: its `name` parameter, or its `plugins` marker."""
    marker = item.get_closest_marker("plugins")
    if marker is not None:
        return list(marker.args)
    callspec = getattr(item, "callspec", None)
    name = callspec.params.get("name") if callspec is not None else None
    return [name] if isinstance(name, str) else []


class TinyRecords(dict):
    """Method -> its tiny run's record; a method no selected test named is a clear error."""

    def __missing__(self, method: str) -> dict[str, Any]:
        raise KeyError(f"{method!r} had no tiny run: a test that reads tiny_records[{method!r}] names it by its "
                       f"`name` parameter or @pytest.mark.plugins({method!r})")


@pytest.fixture(scope="session")
def tiny_records(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> TinyRecords:
    """One `bench run` of each method the selected tests read (tiny preset, seed 0, fraction 1.0,
    synthetic-glands; `tiny_run_methods`), run once a session: `pytest -k mae` runs mae alone,
    the whole slow tier every method. With two or more methods, two `bench run` processes of one
    thread each share the sweep, as two users would (a claimed run is left to its claimer): the
    CI machine's two cores, both busy."""
    from bench.records import load_records

    methods = sorted({m for item in request.session.items if "tiny_records" in getattr(item, "fixturenames", ())
                      for m in tiny_run_methods(item)})
    folder = tmp_path_factory.mktemp("contract-sweep")
    if not methods:
        return TinyRecords()
    path = make_sweep(folder, methods)  # sweep_toml's defaults: the text above
    env = {**os.environ, "BENCH_CACHE": str(tmp_path_factory.getbasetemp() / "bench-cache"), "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-m", "bench", "run", "--config", str(path), "--quiet"], cwd=REPO,
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for _ in range(min(2, len(methods)))]
    errors = [p.communicate(timeout=1800)[1] for p in procs]
    for proc, err in zip(procs, errors):
        assert proc.returncode == 0, err[-3000:]
    return TinyRecords({r["method"]: r for r in load_records(folder / "results")})


def write_sweep(folder: Path, body: str) -> Path:
    path = folder / "bench.toml"
    path.write_text(body)
    return path


def sweep_toml(methods: Sequence[str], seeds: Sequence[int] = (0,), fractions: Sequence[float] = (1.0,),
               dataset: str = "synthetic-glands", params: Mapping[str, Mapping[str, Any]] | None = None,
               preset: str = "tiny", output: str = "results", root: str | None = None, executor: str | None = None,
               datasets: Sequence[Mapping[str, Any]] | None = None,
               tables: Mapping[str, Mapping[str, Any]] | None = None) -> str:
    """A sweep file's text: one data set (or the `[[datasets]]` tables of `datasets`, keys as given),
    `[params.METHOD]` tables from `params`, then any other table from `tables` (e.g. "slurm",
    "slurm.pretrain", "smoke").

    Values are written as JSON, which TOML reads the same for strings, numbers, booleans and lists.
    A test of the loader's errors writes its broken file by hand instead.
    """
    lines = [f"preset = {json.dumps(preset)}", f"seeds = {json.dumps(list(seeds))}", f"output = {json.dumps(output)}"]
    if executor is not None:
        lines.append(f"executor = {json.dumps(executor)}")
    lines.append(f"methods = {json.dumps(list(methods))}")
    if datasets is None:
        entry: dict[str, Any] = {"name": dataset, "label_fractions": list(fractions)}
        datasets = [entry if root is None else {**entry, "root": root}]
    for table in datasets:
        lines += ["", "[[datasets]]"] + [f"{key} = {json.dumps(value)}" for key, value in table.items()]
    for name, table in [*((f"params.{m}", t) for m, t in (params or {}).items()), *(tables or {}).items()]:
        lines += ["", f"[{name}]"] + [f"{key} = {json.dumps(value)}" for key, value in table.items()]
    return "\n".join(lines) + "\n"


def make_sweep(folder: Path, methods: Sequence[str], **kwargs: Any) -> Path:
    """Write `sweep_toml(methods, **kwargs)` to folder/bench.toml and return its path."""
    return write_sweep(folder, sweep_toml(methods, **kwargs))


TINY_SWEEP = sweep_toml(["ddpm", "unet"], seeds=(0, 1), fractions=(1.0, 0.1))  # the config tests edit its text


Polygon = Sequence[tuple[float, float]]


def monuseg_xml(polygons: Sequence[Polygon]) -> str:
    """An annotation file as MoNuSeg ships it: one Aperio `Region` of `Vertex` points per nucleus."""
    regions = "".join(
        f'<Region Id="{i}" Type="0" Zoom="1"><Attributes/><Vertices>'
        + "".join(f'<Vertex X="{x}" Y="{y}" Z="0"/>' for x, y in poly)
        + "</Vertices></Region>"
        for i, poly in enumerate(polygons, start=1)
    )
    return ('<?xml version="1.0" encoding="utf-8"?><Annotations MicronsPerPixel="0.252100">'
            '<Annotation Id="1" Name="" Type="4"><Attributes/><Regions><RegionAttributeHeaders/>'
            f"{regions}</Regions><Plots/></Annotation></Annotations>")


def write_monuseg_case(image_dir: Path, xml_dir: Path, stem: str, polygons: Sequence[Polygon],
                       hw: tuple[int, int] = (24, 32)) -> None:
    """One MoNuSeg case: `stem`.tif (LZW RGB, random pixels) and `stem`.xml with `polygons`."""
    image_dir.mkdir(parents=True, exist_ok=True)
    xml_dir.mkdir(parents=True, exist_ok=True)
    image = np.random.default_rng(len(stem)).integers(0, 256, (*hw, 3), dtype=np.uint8)
    Image.fromarray(image).save(image_dir / f"{stem}.tif", compression="tiff_lzw")
    (xml_dir / f"{stem}.xml").write_text(monuseg_xml(polygons))
