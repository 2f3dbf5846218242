"""The in-process executors: `local` (the default, `run_local`) and `debug`.

`local` runs the pending runs one after another in this process. It deliberately does not fork
workers (submitit's LocalExecutor would): runs of a cell share this process's feature cache
(each window of a backbone is extracted once), a CPU-only machine gains little from parallel
processes that share its cores (on 2 cores, two 1-thread processes trained the small UNet 1.33x
and UNet++ 1.10x as fast as one 2-thread process, docs/small-preset.md) and the records' thread
count, which moves the numbers, would change; and a kill at any moment is already safe (atomic
records, resumable pre-training). `debug` runs the very job objects that `--executor slurm`
would submit, in the same order (pre-training jobs, then the runs), in this process: the Slurm
code path with a plain traceback and no scheduler. With `[pretrain] local_processes = N` both
first build each missing artefact with N spawned processes (one data-parallel group, one GPU each).
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path

from tqdm.auto import tqdm

from bench.distributed import spawn
from bench.executors.jobs import PretrainJob, RunJob
from bench.executors.plan import make_plan
from bench.runner import RunSpec

log = logging.getLogger("bench")


def run_local(runs: list[RunSpec], progress: bool = True) -> list[Path]:
    """Run the specs one after another in this process (they share its data and artefact caches).

    A run another process is doing is skipped first and waited for at the end.
    """
    paths: list[Path] = []
    busy: list[RunSpec] = []
    bar = tqdm(runs, desc="runs", unit="run", disable=not (progress and sys.stderr.isatty()))  # else: log lines
    for spec in bar:
        bar.set_postfix_str(f"{spec.dataset} {spec.fraction:g} {spec.method} seed {spec.seed}")
        path = spec.execute(progress=progress, wait=False)
        if path is None:
            log.info("%s: another process is doing it; coming back to it at the end", spec.run_id)
            busy.append(spec)
        else:
            paths.append(path)
    for spec in busy:
        log.info("%s: waiting for the other process", spec.run_id)
        path = spec.execute(progress=progress)
        assert path is not None  # a waiting claim always ends with a record
        paths.append(path)
    return paths


def run_debug(runs: list[RunSpec], checkpoint_every_s: float) -> list[Path]:
    """Execute the Slurm plan's jobs in order, here."""
    plan = make_plan(runs)
    for task in plan.pretrain:
        PretrainJob(task.spec, checkpoint_every_s, task.artefact)()
    return [Path(RunJob(spec, checkpoint_every_s)()) for array in plan.arrays for spec in array.specs]


def pretrain_spawned(runs: list[RunSpec], processes: int, checkpoint_every_s: float) -> None:
    """Build the artefacts `runs` need, each with `processes` processes on this machine."""
    for task in make_plan(runs).pretrain:
        spawn(_pretrain, processes, task.spec, checkpoint_every_s)


def _pretrain(spec: RunSpec, checkpoint_every_s: float) -> None:
    spec.pretrain(checkpoint_every_s)
