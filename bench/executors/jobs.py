"""The callables a Slurm job runs: one pre-training artefact, or one run.

Both are `submitit.helpers.Checkpointable`: on preemption or timeout submitit calls `checkpoint()`
and requeues the job. They hold nothing but the run's spec (plain data), so the requeued job
starts from what is on disk: the record (a finished run returns at once), the artefact, and
the pre-training checkpoint the loop saved last. Nothing learned is ever pickled. A pre-training
job with several tasks runs `PretrainJob` in each: they form one data-parallel group.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from submitit.helpers import Checkpointable, DelayedSubmission

from bench.distributed import slurm_group
from bench.progress import ensure_logging
from bench.records import is_done
from bench.resume import DEFAULT_CHECKPOINT_EVERY_S
from bench.runner import RunSpec

CODE = Path(__file__).resolve().parents[2]  # the snapshot a Slurm job runs from


def _announce(what: str) -> None:
    """One line in the job's log saying what it does and which attempt this is; from here on the
    job's stages log a progress line every `LogSettings.every_s` seconds (no bars in a log)."""
    ensure_logging()
    env = os.environ
    job = env.get("SLURM_JOB_ID", "-")
    if "SLURM_ARRAY_JOB_ID" in env:
        job = f"{env['SLURM_ARRAY_JOB_ID']}_{env.get('SLURM_ARRAY_TASK_ID', '?')}"
    print(f"bench: {what} (job {job}, restart {env.get('SLURM_RESTART_COUNT', '0')}, code {CODE})",
          file=sys.stderr, flush=True)


@dataclass
class PretrainJob(Checkpointable):
    """Build the pre-trained artefact `spec` needs; every run sharing it depends on this job."""

    spec: RunSpec
    checkpoint_every_s: float = DEFAULT_CHECKPOINT_EVERY_S
    artefact: Path | None = None  # which stage to build (default: the run's last)

    def __call__(self) -> str:
        _announce(f"pretrain {self.spec.method} on {self.spec.dataset}")
        with slurm_group():  # no group when the job has one task
            return str(self.spec.pretrain(self.checkpoint_every_s, self.artefact))

    def checkpoint(self, *args: object, **kwargs: object) -> DelayedSubmission:
        """Requeue as a fresh job of the same spec; progress lives in the on-disk checkpoint."""
        return DelayedSubmission(PretrainJob(self.spec, self.checkpoint_every_s, self.artefact))


@dataclass
class RunJob(Checkpointable):
    """One run: a requeued job whose record is already written returns without doing anything."""

    spec: RunSpec
    checkpoint_every_s: float = DEFAULT_CHECKPOINT_EVERY_S

    def __call__(self) -> str:
        _announce(f"run {self.spec.run_id}")
        done = is_done(self.spec.record_path)
        path = self.spec.execute(progress=False, checkpoint_every_s=self.checkpoint_every_s)
        if done:
            print(f"bench: {self.spec.run_id} was already done; nothing to do", file=sys.stderr, flush=True)
        return str(path)

    def checkpoint(self, *args: object, **kwargs: object) -> DelayedSubmission:
        """Requeue as a fresh job of the same spec; the record decides whether work remains."""
        return DelayedSubmission(RunJob(self.spec, self.checkpoint_every_s))
