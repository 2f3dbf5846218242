"""The experiment contract and its registry.

An experiment is a class with a `name`, a `title` and two stages: `runs(ctx)` lists every run it
needs (ordinary `RunSpec`s, so finished records of `bench run` or of another experiment with
the same settings are reused, and Slurm ships them like any other), and `write(ctx)` turns the
records into tables and figures under `results/NAME/`. Running the missing runs in between is
the harness's job (`run_experiment`), through the same executors as `bench run`.
"""
from __future__ import annotations

import importlib
import pkgutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

from bench.config import DatasetEntry, SweepConfig
from bench.data import DATASETS
from bench.errors import BenchError
from bench.records import read_record
from bench.runner import RunSpec, pending

EXPERIMENTS: dict[str, type["Experiment"]] = {}


@dataclass(frozen=True)
class Variant:
    """A row of a table: a method, optionally with config overrides (an ablation's setting)."""

    label: str
    method: str
    params: dict[str, Any] = field(default_factory=dict, hash=False)


@dataclass
class ExperimentContext:
    """What an experiment may use: the sweep (roots, seeds, preset, executor) and its output folder."""

    name: str
    sweep: SweepConfig
    quiet: bool = False
    run_missing: bool = True  # False: write from the records there are (`--no-run`)
    notes: list[str] = field(default_factory=list)
    # The run ids whose records (or predictions) `write` has read so far, in order: every file it
    # writes names them (a table's stem.json, a figure's), and `bench report` reads them there.
    read: list[str] = field(default_factory=list)
    # The sweep's runs, expanded once: given by a caller that has them (`bench run`), or built by the
    # first experiment that needs them and then carried.
    sweep_runs: list[RunSpec] | None = None

    @property
    def out_dir(self) -> Path:
        return Path(self.sweep.output) / self.name

    def entry(self, dataset: str) -> DatasetEntry | None:
        """The sweep's [[datasets]] entry, or a root-less one for embedded data; None when absent."""
        for e in self.sweep.datasets:
            if e.name == dataset:
                return e
        if not DATASETS[dataset].needs_root:
            return DatasetEntry(name=dataset)
        return None

    def available(self, dataset: str) -> bool:
        """Whether `dataset` can be used; if not, say once why its part of the experiment is left out."""
        if self.entry(dataset) is not None:
            return True
        self.note(f"{dataset}: not among bench.toml's [[datasets]] (no root), its columns are left out")
        return False

    def note(self, text: str) -> None:
        """Say once why part of the experiment is left out or stands in: on stderr now, and in
        `notes`, which the tables' footnotes and the figures' titles carry."""
        if text not in self.notes:
            self.notes.append(text)
            print(f"bench: {self.name}: {text}", file=sys.stderr)

    def specs(self, variant: Variant, dataset: str, fraction: float, seeds: tuple[int, ...] | None = None,
              **spec_fields: Any) -> list[RunSpec]:
        """One run per seed; the variant's params go over bench.toml's `[params.METHOD]`."""
        entry = self.entry(dataset)
        if entry is None:
            raise BenchError(f"{self.sweep.source}: datasets: {self.name} needs {dataset!r}, which has no root")
        params = {**self.sweep.params.get(variant.method, {}), **variant.params}
        return [RunSpec(dataset=dataset, root=entry.root, fraction=fraction, method=variant.method, seed=s,
                        preset=self.sweep.preset, output=self.sweep.output, params=params, **spec_fields)
                for s in (seeds if seeds is not None else self.sweep.seeds)]

    def records(self, specs: list[RunSpec]) -> list[dict[str, Any]]:
        """The finished records of `specs` (missing ones left out; their cells show a smaller n)."""
        found = []
        for spec in specs:
            record = read_record(spec.record_path)
            if record is not None:
                self.mark_read(spec.run_id)
                found.append(record)
        return found

    def mark_read(self, run_id: str) -> None:
        """Note that `write` read this run's record or predictions (see `read`)."""
        if run_id not in self.read:
            self.read.append(run_id)

    def path(self, filename: str) -> Path:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        return self.out_dir / filename


class Experiment:
    """A table or figure of the paper. Subclass, set `name` and `title`, register with `@experiment`."""

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""

    def runs(self, ctx: ExperimentContext) -> list[RunSpec]:
        """Every run this experiment reads, in an order that reuses pre-trained artefacts."""
        raise NotImplementedError

    def write(self, ctx: ExperimentContext) -> list[Path]:
        """Tables (.md, .tex, .csv) and figures (.png, .pdf) from the records, each with its
        stem.json naming the runs it read (`ctx.read`); the paths written."""
        raise NotImplementedError


def experiment(cls: type[Experiment]) -> type[Experiment]:
    """Class decorator: register an experiment under its `name`."""
    if not cls.name or cls.name in EXPERIMENTS:
        raise ValueError(f"experiment name {cls.name!r} is empty or taken")
    EXPERIMENTS[cls.name] = cls
    return cls


def _discover() -> None:
    package = Path(__file__).parent
    for info in pkgutil.iter_modules([str(package)]):
        if info.name != "base":
            importlib.import_module(f"bench.experiments.{info.name}")


def names() -> list[str]:
    _discover()
    return sorted(EXPERIMENTS)


def get(name: str) -> type[Experiment]:
    _discover()
    if name not in EXPERIMENTS:
        raise BenchError(f"experiment: unknown experiment {name!r}; known: {', '.join(sorted(EXPERIMENTS))}")
    return EXPERIMENTS[name]


def run_experiment(name: str, sweep: SweepConfig, quiet: bool = False,
                   launch: Callable[..., int] | None = None, run_missing: bool = True,
                   sweep_runs: list[RunSpec] | None = None) -> tuple[int, list[Path]]:
    """Run what `name` is missing, then write its files. Returns (exit code, files written).

    With `run_missing=False` nothing runs: the files show the records there are (a sweep still
    queued on Slurm, or one cut short), and missing runs only lower a cell's n. `sweep_runs`: the
    sweep's runs where the caller has expanded them already.
    """
    from bench.launch import launch as default_launch

    exp = get(name)()
    ctx = ExperimentContext(name=name, sweep=sweep, quiet=quiet, run_missing=run_missing, sweep_runs=sweep_runs)
    runs = exp.runs(ctx)
    code = 0
    if run_missing:
        code = (launch or default_launch)(sweep, runs, quiet=quiet, wait=True)
    elif missing := len(pending(runs)):
        print(f"bench: {name}: {missing} of {len(runs)} runs have no record yet (--no-run); "
              "their cells show a smaller n", file=sys.stderr)
    files = exp.write(ctx)
    return code, files


# Helpers the figure experiments share.

SYNTHETIC = "synthetic-glands"  # the data set a figure falls back to


def medical_datasets(ctx: ExperimentContext, wanted: tuple[str, ...], what: str) -> list[str]:
    """The configured data sets among `wanted`; synthetic-glands (with a note) when none is.

    Shared by fig6, fig7, fig8 and qualitative: a figure is still drawn on a checkout without real
    data, and the note (printed and kept in ctx.notes) says it is not the paper's data.
    """
    found = [d for d in wanted if ctx.entry(d) is not None]
    if found:
        return found
    ctx.note(f"{' and '.join(wanted)} not configured in {ctx.sweep.source}; {what} uses {SYNTHETIC} instead")
    return [SYNTHETIC]

