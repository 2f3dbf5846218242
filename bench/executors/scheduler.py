"""Asking Slurm about jobs: squeue for the live ones, sacct for the ones that ended.

squeue alone decides what is still alive, so status works on clusters without accounting; sacct,
where it answers, only adds why a job ended (CANCELLED, TIMEOUT, FAILED, OUT_OF_MEMORY ...).
"""
from __future__ import annotations

import getpass
import shutil
import subprocess
from dataclasses import dataclass
from typing import Iterable

from submitit.slurm.slurm import read_job_id

from bench.errors import BenchError

RUNNING = {"RUNNING", "COMPLETING", "CONFIGURING", "STAGE_OUT", "SIGNALING", "RESIZING"}
STUCK_REASONS = {"DependencyNeverSatisfied"}  # pending forever: the job it waits for failed
TIMEOUT_S = 60


@dataclass(frozen=True)
class JobState:
    """Slurm's state word for one job (or array task) and, while pending, the reason."""

    state: str
    reason: str = ""

    @property
    def phase(self) -> str:
        """pending | running | ended: what matters for resubmission."""
        if self.state in RUNNING:
            return "running"
        if self.state in ("PENDING", "REQUEUED", "REQUEUE_HOLD", "SUSPENDED") and self.reason not in STUCK_REASONS:
            return "pending"
        return "ended"

    @property
    def stuck(self) -> bool:
        """Still queued but can never start: cancel it before resubmitting its work."""
        return self.reason in STUCK_REASONS

    def __str__(self) -> str:
        return f"{self.state} ({self.reason})" if self.reason and self.reason != "None" else self.state


# Out of the queue and unknown to sacct: no accounting, or an array task cancelled while pending
# (Slurm keeps no accounting record for those).
GONE = JobState("GONE", "left the queue; sacct has no record")


def available() -> bool:
    return shutil.which("sbatch") is not None and shutil.which("squeue") is not None


def _call(cmd: list[str]) -> str | None:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout if proc.returncode == 0 else None


def _expand(job_id: str) -> list[str]:
    """'12_[0-3,7]' -> ['12_0', ..., '12_3', '12_7']; plain ids unchanged."""
    out = []
    for part in read_job_id(job_id):
        if len(part) == 1:
            out.append(part[0])
        else:
            last = int(part[2]) if len(part) > 2 else int(part[1])
            out += [f"{part[0]}_{i}" for i in range(int(part[1]), last + 1)]
    return out


def _parse(text: str) -> dict[str, JobState]:
    states: dict[str, JobState] = {}
    for line in text.splitlines():
        fields = line.strip().split("|")
        if len(fields) < 2 or not fields[0] or "." in fields[0]:
            continue
        state = JobState(fields[1].split()[0] if fields[1] else "UNKNOWN", fields[2] if len(fields) > 2 else "")
        for job_id in _expand(fields[0]):
            states[job_id] = state
    return states


def job_states(job_ids: Iterable[str]) -> dict[str, JobState]:
    """The state of each job id; ids neither squeue nor sacct knows come back as GONE."""
    wanted = set(job_ids)
    if not wanted:
        return {}
    live = _call(["squeue", "-h", "-r", "-u", getpass.getuser(), "-o", "%i|%T|%r"])
    if live is None:
        raise BenchError("squeue failed: is this a Slurm login node? (bench status needs the scheduler)")
    states = {k: v for k, v in _parse(live).items() if k in wanted}
    ended = wanted - states.keys()
    if ended:
        bases = sorted({j.split("_")[0] for j in ended})
        past = _call(["sacct", "-X", "-n", "-P", "-o", "JobID,State", "-j", ",".join(bases)])
        known = _parse(past or "")
        for job_id in ended:
            state = known.get(job_id, GONE)
            states[job_id] = state if state.phase == "ended" else GONE
    return states


def cancel(job_ids: Iterable[str]) -> None:
    """scancel the given jobs (used for jobs stuck behind a dependency that can never be met)."""
    ids = sorted(set(job_ids))
    if ids:
        _call(["scancel", *ids])
