"""Where every run of a sweep stands: done, running, pending, failed or missing.

Done comes from the records (the commit point of a run), the rest from the scheduler about the
job the book says was last submitted for the run. The scheduler is asked first and the records
read second, so a job that finishes in between counts as done, never as failed.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from bench.executors import scheduler
from bench.executors.book import JobBook, load_book
from bench.records import is_done
from bench.resume import loop_files
from bench.runner import RunSpec, run_checkpoint_files
from bench.store import TMP_PREFIX

PHASES = ("done", "running", "pending", "failed", "missing")


@dataclass(frozen=True)
class RunStatus:
    spec: RunSpec
    phase: str                 # one of PHASES
    job_id: str | None = None
    detail: str = ""           # the scheduler's state word for failed / pending runs
    queued: bool = False       # the job is still in the queue (a failed one: stuck behind a failed dependency)


def sweep_status(output: str | Path, runs: list[RunSpec], book: JobBook | None = None) -> list[RunStatus]:
    """One RunStatus per run, in the order given."""
    book = book or load_book(output)
    ids = {r.run_id: book.runs[r.run_id] for r in runs if r.run_id in book.runs}
    states = scheduler.job_states(ids.values()) if ids and scheduler.available() else {}
    out = []
    for spec in runs:
        job_id = ids.get(spec.run_id)
        if is_done(spec.record_path):
            out.append(RunStatus(spec, "done", job_id))
        elif job_id is None:
            out.append(RunStatus(spec, "missing"))
        elif job_id not in states:  # no scheduler to ask from here
            out.append(RunStatus(spec, "failed", job_id, "UNKNOWN (no squeue)"))
        else:
            state = states[job_id]
            phase = {"running": "running", "pending": "pending"}.get(state.phase, "failed")
            out.append(RunStatus(spec, phase, job_id, str(state), queued=phase != "failed" or state.stuck))
    return out


def pretrain_states(book: JobBook) -> dict[str, scheduler.JobState]:
    """The scheduler's view of every pre-training job in the book, by artefact."""
    if not book.pretrain or not scheduler.available():
        return {}
    states = scheduler.job_states(book.pretrain.values())
    return {artefact: states[job] for artefact, job in book.pretrain.items() if job in states}


def render_pretrain(output: str | Path, runs: list[RunSpec], book: JobBook | None = None) -> str:
    """One line per pre-training job of this sweep: built, or what the scheduler says."""
    book = book or load_book(output)
    needed = {a for r in runs for a in r.artefacts()}
    mine = {rel: job for rel, job in book.pretrain.items() if Path(output) / rel in needed}
    states = pretrain_states(JobBook(pretrain=mine)) if mine else {}
    lines = [f"pre-training {rel}: {'built' if (Path(output) / rel).exists() else states.get(rel, 'UNKNOWN')} "
             f"(job {job})" for rel, job in sorted(mine.items())]
    return "".join(line + "\n" for line in lines)


def leftover_checkpoints(output: str | Path, runs: list[RunSpec]) -> list[tuple[Path, str]]:
    """Every file under output/checkpoints and what it is: resumable state a pending run continues
    from, or left over (its artefact is built or its run done, e.g. after a kill; safe to delete)."""
    folder = Path(output) / "checkpoints"
    if not folder.is_dir():
        return []
    why: dict[Path, str] = {}
    for spec in runs:
        done = is_done(spec.record_path)
        for path in run_checkpoint_files(output, spec.run_id):
            why[path] = "left over: its run is done" if done else f"resumable: {spec.run_id} continues from it"
        for artefact in spec.artefacts():
            built = artefact.exists()
            for path in loop_files(spec.checkpoint_path(artefact)):
                why[path] = (f"left over: {artefact.relative_to(output)} is built" if built
                             else f"resumable: pre-training of {artefact.relative_to(output)} continues from it")
    return [(path, why.get(path, "left over: no run of this sweep reads it"))
            for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(TMP_PREFIX))]


def render_checkpoints(output: str | Path, runs: list[RunSpec]) -> str:
    """The checkpoint files there are, one line each with its size and what it is (nothing if none)."""
    found = leftover_checkpoints(output, runs)
    if not found:
        return ""
    sizes = {path: path.stat().st_size for path, _ in found}
    spent = [p for p, why in found if why.startswith("left over")]
    lines = [f"checkpoints: {len(found)} file(s), {sum(sizes.values()) / 2**20:.1f} MiB; {len(spent)} left over "
             f"({sum(sizes[p] for p in spent) / 2**20:.1f} MiB, safe to delete):"]
    lines += [f"  {path.relative_to(output)}  {sizes[path] / 2**20:.1f} MiB  {why}" for path, why in found]
    return "\n".join(lines) + "\n"


def counts(statuses: Iterable[RunStatus]) -> Counter:
    return Counter(s.phase for s in statuses)


def render_status(statuses: list[RunStatus]) -> str:
    """A markdown table, one row per cell with its phase counts, then the failed runs by name."""
    cells: dict[tuple, Counter] = {}
    for s in statuses:
        cells.setdefault((s.spec.dataset, s.spec.fraction, s.spec.method), Counter())[s.phase] += 1
    lines = ["| dataset | fraction | method | " + " | ".join(PHASES) + " |",
             "|---|---|---|" + "---|" * len(PHASES)]
    for (dataset, fraction, method), c in sorted(cells.items()):
        lines.append(f"| {dataset} | {fraction:g} | {method} | " + " | ".join(str(c[p]) for p in PHASES) + " |")
    failed = [s for s in statuses if s.phase == "failed"]
    if failed:
        lines += ["", "failed runs (`bench run` resubmits them):"]
        lines += [f"  {s.spec.run_id}  job {s.job_id}  {s.detail}" for s in failed]
    total = counts(statuses)
    lines += ["", "total: " + ", ".join(f"{total[p]} {p}" for p in PHASES if total[p])]
    return "\n".join(lines) + "\n"
