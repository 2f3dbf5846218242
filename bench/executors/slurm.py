"""`bench run --executor slurm`: submit what is missing or failed through submitit, optionally wait.

Pre-training jobs go first (one per artefact), then one job array per group of runs, each array
`afterok` on the pre-training job it needs. Every job starts in the sweep's code snapshot and
runs a checkpointable callable, so preemption, timeouts and `scontrol requeue` only cost the work
since the last on-disk checkpoint. The job ids go into the book for `bench status` and reruns.
"""
from __future__ import annotations

import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from bench.config import SweepConfig
from bench.errors import BenchError
from bench.executors import scheduler
from bench.executors.book import JobBook, add_to_book, load_book
from bench.executors.jobs import PretrainJob, RunJob
from bench.executors.plan import Plan, make_plan
from bench.executors.snapshot import make_snapshot
from bench.executors.status import RunStatus, counts, pretrain_states, sweep_status
from bench.runner import RunSpec
from bench.slurm_config import SlurmResources
from bench.store import remove_stale_temporaries

THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def sbatch_parameters(res: SlurmResources, name: str, snapshot: Path | str,
                      dependency: str | None = None) -> dict[str, Any]:
    """submitit SlurmExecutor parameters for one job or array: resources, code snapshot, threads."""
    snap = shlex.quote(str(snapshot))
    setup = [f"export PYTHONPATH={snap}${{PYTHONPATH:+:$PYTHONPATH}}"]
    setup += [f"export {var}=${{SLURM_CPUS_PER_TASK:-1}}" for var in THREAD_VARS]
    params: dict[str, Any] = {
        "job_name": name, "time": res.timeout_min, "cpus_per_task": res.cpus_per_task,
        "array_parallelism": res.array_parallelism, "setup": setup + list(res.setup),
        "additional_parameters": {"chdir": str(snapshot)},
    }
    for key in ("partition", "qos", "account", "constraint"):
        if getattr(res, key):
            params[key] = getattr(res, key)
    if res.mem_gb:
        params["mem"] = f"{round(res.mem_gb * 1024)}M"
    if res.gpus_per_node:
        params["gpus_per_node"] = res.gpus_per_node
    if res.processes > 1:  # a data-parallel pre-training job: one task per GPU (bench/distributed.py)
        params.update(nodes=res.nodes, ntasks_per_node=res.tasks)
    if dependency:
        params["dependency"] = dependency
    return params


def _submit(folder: Path, params: dict[str, Any], jobs: list[Any]) -> list[str]:
    """Submit callables with one sbatch call (an array if more than one); return their job ids."""
    import submitit

    executor = submitit.SlurmExecutor(folder=folder)
    executor.update_parameters(**params)
    try:
        with executor.batch():
            submitted = [executor.submit(job) for job in jobs]
    except (submitit.core.utils.FailedJobError, subprocess.CalledProcessError) as exc:
        message = " ".join(str(getattr(exc, "stderr", None) or exc).split())
        raise BenchError(f"sbatch rejected {params['job_name']}: {message}") from None
    return [str(job.job_id) for job in submitted]


def submit_sweep(sweep: SweepConfig, runs: list[RunSpec], dry_run: bool = False) -> list[RunStatus]:
    """Submit the runs that are missing or failed; runs pending or running are left alone."""
    output = Path(sweep.output)
    book = load_book(output)
    statuses = sweep_status(output, runs, book)
    todo = [s.spec for s in statuses if s.phase in ("missing", "failed")]
    c = counts(statuses)
    if not todo:
        print(f"bench: nothing to submit ({c['done']} done, {c['running']} running, {c['pending']} pending)",
              file=sys.stderr)
        return statuses
    queued = {output / art: book.pretrain[art] for art, state in pretrain_states(book).items()
              if state.phase in ("pending", "running")}
    plan = make_plan(todo, queued)
    if dry_run:
        print(describe(plan, sweep), end="")
        return statuses
    if not (c["running"] or c["pending"] or queued):
        remove_stale_temporaries(output)  # no live job of ours can be writing them
    scheduler.cancel(s.job_id for s in statuses if s.phase == "failed" and s.queued and s.job_id)
    new = JobBook()
    try:
        _submit_plan(plan, sweep, make_snapshot(output), new)
    finally:
        add_to_book(output, new)
    print(f"bench: submitted {len(plan.pretrain)} pre-training job(s) and {plan.n_runs} run(s) in "
          f"{len(plan.arrays)} array(s); {c['running'] + c['pending']} already queued. "
          f"`bench status` shows progress.", file=sys.stderr)
    return statuses


def _submit_plan(plan: Plan, sweep: SweepConfig, snapshot: Path, new: JobBook) -> None:
    folder = Path(sweep.output) / "slurm" / "logs"
    every = sweep.slurm.checkpoint_every_s
    built: dict[Path, str] = dict(plan.queued)
    for task in plan.pretrain:  # in stage order: a task's `after` was submitted before it
        dependency = f"afterok:{built[task.after]}" if task.after in built else None
        params = sbatch_parameters(sweep.slurm.resources("pretrain"), task.name, snapshot, dependency)
        (job_id,) = _submit(folder, params, [PretrainJob(task.spec, every, task.artefact)])
        built[task.artefact] = job_id
        new.pretrain[str(task.artefact.relative_to(sweep.output))] = job_id
        new.snapshots[job_id] = str(snapshot)
    for array in plan.arrays:
        dependency = f"afterok:{built[array.artefact]}" if array.artefact is not None else None
        params = sbatch_parameters(sweep.slurm.resources(array.kind), array.name, snapshot, dependency)
        ids = _submit(folder, params, [RunJob(spec, every) for spec in array.specs])
        new.runs.update({spec.run_id: job_id for spec, job_id in zip(array.specs, ids)})
        new.snapshots[ids[0].split("_")[0]] = str(snapshot)


def describe(plan: Plan, sweep: SweepConfig) -> str:
    """What `--dry-run` prints: every job and array with its sbatch flags and its runs."""
    snapshot = Path(sweep.output) / "slurm" / "snapshot-<code hash>"
    lines = [f"bench: dry run: would submit {len(plan.pretrain)} pre-training job(s) and "
             f"{plan.n_runs} run(s) in {len(plan.arrays)} array(s)"]
    names = {t.artefact: t.name for t in plan.pretrain}
    names.update({a: f"queued job {j}" for a, j in plan.queued.items()})
    for task in plan.pretrain:
        after = names.get(task.after) if task.after is not None else None
        lines += [f"job {task.name}: builds {task.artefact}" + (f", after {after}" if after else "")]
        lines += _flags(sbatch_parameters(sweep.slurm.resources("pretrain"), task.name, snapshot,
                                          f"afterok:<{after}>" if after else None))
    for array in plan.arrays:
        after = names[array.artefact] if array.artefact is not None else None
        params = sbatch_parameters(sweep.slurm.resources(array.kind), array.name, snapshot,
                                   f"afterok:<{after}>" if after else None)
        n, par = len(array.specs), params.pop("array_parallelism")
        if n > 1:
            params["array"] = f"0-{n - 1}%{min(n, par)}"
        lines += [f"array {array.name}: {n} run(s)" + (f", after {after}" if after else "")]
        lines += _flags(params)
        lines += [f"  task {i}: {spec.run_id}" for i, spec in enumerate(array.specs)]
    return "\n".join(lines) + "\n"


def _flags(params: dict[str, Any]) -> list[str]:
    params = dict(params)
    setup = params.pop("setup", [])
    params.pop("array_parallelism", None)
    params.update(params.pop("additional_parameters", {}))
    lines = [f"  #SBATCH --{k.replace('_', '-')}={v}" for k, v in sorted(params.items())]
    return lines + [f"  setup: {line}" for line in setup]


def wait(sweep: SweepConfig, runs: list[RunSpec], report: Callable[[str], None] = lambda s: print(s, file=sys.stderr),
         timeout_s: float | None = None) -> list[RunStatus]:
    """Poll until no run of the sweep is pending or running; report each change of the counts."""
    last = None
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while deadline is None or time.monotonic() < deadline:
        statuses = sweep_status(sweep.output, runs)
        c = counts(statuses)
        line = ", ".join(f"{c[p]} {p}" for p in ("done", "running", "pending", "failed", "missing") if c[p])
        if line != last:
            report(f"bench: {time.strftime('%H:%M:%S')} {line}")
            last = line
        if not (c["running"] or c["pending"]):
            return statuses
        time.sleep(sweep.slurm.poll_s)
    raise TimeoutError(f"runs still queued after {timeout_s:.0f} s: {last}")
