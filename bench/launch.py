"""Run a list of runs with the sweep's executor: the one code path of `bench run` and `bench experiment`."""
from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

from bench.config import SweepConfig
from bench.errors import BenchError
from bench.executors.local import run_local
from bench.runner import RunSpec, check_output_layout, pending, validate_data
from bench.store import check_writable, remove_stale_temporaries

log = logging.getLogger("bench")


def launch(sweep: SweepConfig, runs: list[RunSpec], *, quiet: bool = False, wait: bool = True,
           dry_run: bool = False) -> int:
    """Do (or, for Slurm, submit) every pending run; 0 when nothing failed.

    Locally the runs finish before this returns; with Slurm, `wait` blocks until the sweep ends.
    """
    start = time.perf_counter()
    check_output_layout(sweep, runs)  # before any record is read: a folder named like one is in the way
    todo = pending(runs)
    if not todo:
        print(f"bench: all {len(runs)} runs are done ({sweep.output}); nothing to do")
        return 0
    check_writable(sweep.output, "output", sweep.source)
    validate_data(sweep, todo)
    _check_layout(sweep, todo)
    if sweep.executor == "slurm":
        return _slurm(sweep, runs, wait=wait, dry_run=dry_run)
    if dry_run:
        print("\n".join(f"would run {r.run_id}" for r in todo))
        return 0
    Path(sweep.output).mkdir(parents=True, exist_ok=True)
    removed = remove_stale_temporaries(sweep.output)  # only abandoned ones: another process may share it
    if removed:
        log.info("removed %d abandoned temporary file(s) under %s", removed, sweep.output)
    log.info("%d of %d runs to do -> %s", len(todo), len(runs), sweep.output)
    if sweep.pretrain.local_processes > 1:
        from bench.executors.local import pretrain_spawned

        pretrain_spawned(todo, sweep.pretrain.local_processes, sweep.slurm.checkpoint_every_s)
    if sweep.executor == "debug":
        from bench.executors.local import run_debug

        run_debug(todo, sweep.slurm.checkpoint_every_s)
    else:
        run_local(todo, progress=not quiet)
    log.info("done in %.1f s", time.perf_counter() - start)
    return 0


def _slurm(sweep: SweepConfig, runs: list[RunSpec], *, wait: bool, dry_run: bool) -> int:
    """Submit what is missing or failed; with `wait`, block until the sweep ends."""
    from bench.executors import scheduler
    from bench.executors.slurm import submit_sweep, wait as wait_for
    from bench.executors.status import counts, render_status

    if not dry_run and not scheduler.available():
        raise BenchError(f"{sweep.source}: executor: slurm needs sbatch and squeue on PATH (not found)")
    submit_sweep(sweep, runs, dry_run=dry_run)
    if dry_run or not wait:
        return 0
    statuses = wait_for(sweep, runs)
    print(render_status(statuses), end="", file=sys.stderr)
    failed = counts(statuses)["failed"]
    if failed:
        print(f"bench: {failed} run(s) failed; rerun to resubmit them, logs in "
              f"{Path(sweep.output) / 'slurm' / 'logs'}", file=sys.stderr)
        return 1
    return 0


def _check_layout(sweep: SweepConfig, todo: list[RunSpec]) -> None:
    from bench.executors.plan import check_layout

    if sweep.executor == "slurm":
        res = sweep.slurm.resources("pretrain")
        where = "slurm.pretrain.tasks_per_node" if res.tasks_per_node else "slurm.pretrain.gpus_per_node"
        check_layout(todo, res.processes, sweep.pretrain.shards, sweep.source, where)
    else:
        check_layout(todo, sweep.pretrain.local_processes, sweep.pretrain.shards, sweep.source,
                     "pretrain.local_processes")
