"""Turning the runs to do into jobs: one pre-training job per artefact, then arrays of runs.

A method may build more than one shared artefact (datasetddpm samples images from the DDPM
backbone): each stage is a job of its own, `afterok` on the job of the stage before it.

SSL runs of the same data set and pre-training config share one backbone, so it is built once,
by its own job; the runs that read it form one array that starts when that job succeeded
(`afterok`). Runs whose artefact exists already, and supervised runs, need not wait for
anything. An array holds one method's runs, so `squeue` names what is waiting.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bench import registry
from bench.errors import ConfigError
from bench.runner import RunSpec

MAX_ARRAY = 1000  # Slurm's default MaxArraySize is 1001: larger groups become several arrays


@dataclass(frozen=True)
class PretrainTask:
    """Build `artefact`; `spec` is the first run that needs it (its seed seeds the build).

    `after` is the artefact of the stage before (datasetddpm's samples need the DDPM backbone),
    still to be built: this job then waits for that one's.
    """

    artefact: Path
    spec: RunSpec
    after: Path | None = None

    @property
    def name(self) -> str:
        return f"bench-pretrain-{self.artefact.parent.name}-{self.spec.dataset}"


@dataclass(frozen=True)
class ArrayTask:
    """Runs of one kind submitted as one job array, optionally after one artefact's job."""

    kind: str                       # ssl | supervised (selects the [slurm.KIND] resources)
    specs: tuple[RunSpec, ...]
    artefact: Path | None = None    # the artefact these runs wait for, if it is still being built

    @property
    def name(self) -> str:
        methods = "+".join(dict.fromkeys(s.method for s in self.specs))
        return f"bench-{self.kind}-{methods}"


@dataclass(frozen=True)
class Plan:
    pretrain: tuple[PretrainTask, ...]
    arrays: tuple[ArrayTask, ...]
    queued: dict[Path, str] = field(default_factory=dict)  # artefact -> pre-training job already queued

    @property
    def n_runs(self) -> int:
        return sum(len(a.specs) for a in self.arrays)


def make_plan(todo: list[RunSpec], queued: dict[Path, str] | None = None) -> Plan:
    """Group `todo` (runs without record and without a live job) into jobs.

    `queued` maps artefacts whose pre-training job is still pending or running to that job: their
    runs wait for it instead of a second pre-training job being submitted.
    """
    queued = dict(queued or {})
    pretrain: dict[Path, PretrainTask] = {}
    groups: dict[tuple[str, str, Path | None], list[RunSpec]] = {}
    for spec in todo:
        kind = registry.get(spec.method).kind
        missing = [a for a in spec.artefacts() if not a.exists()]
        for i, stage in enumerate(missing):
            if stage not in queued:
                pretrain.setdefault(stage, PretrainTask(stage, spec, missing[i - 1] if i else None))
        artefact = missing[-1] if missing else None
        groups.setdefault((kind, spec.method, artefact), []).append(spec)
    arrays = tuple(ArrayTask(kind, tuple(specs[i : i + MAX_ARRAY]), artefact)
                   for (kind, _, artefact), specs in groups.items() for i in range(0, len(specs), MAX_ARRAY))
    waited = {t.artefact for t in arrays} | {t.after for t in pretrain.values()}
    return Plan(tuple(pretrain.values()), arrays, {a: j for a, j in queued.items() if a in waited})


def check_layout(todo: list[RunSpec], processes: int, shards: int | None, source: str, where: str) -> None:
    """Fail before anything runs if `processes` data-parallel processes (`where` sets them) cannot
    split the pre-training batches of `todo` into `shards` (default: one per process)."""
    total = shards or processes
    if total % processes:
        raise ConfigError(source, "pretrain.shards", f"{total} is not a multiple of the {processes} "
                                                     f"pre-training processes ({where})")
    for spec in todo:
        if spec.artefact() is None:
            continue
        for batch in spec.plugin().pretrain_batches():
            if batch % total:
                key = "pretrain.shards" if shards else where
                raise ConfigError(source, key, f"{spec.method}'s pre-training batch of {batch} does not "
                                               f"split into {total} equal parts (one per process)")
