"""Resumable training loops: periodic on-disk checkpoints a restarted job continues from.

A preempted or requeued Slurm job (or a local run killed with -9) restarts from scratch as far as
the process is concerned; what it can find is what was written to disk. The runner opens a
`resumable(path)` scope around work that may take long (pre-training a backbone; a run's probe,
RunContext.run_checkpoint); a loop inside
asks `loop_state(...)` where to start and reports each finished step, and the state (weights,
optimiser, EMA, RNG streams, loss history, step) is saved atomically every `every_s` seconds.
Restoring every RNG stream makes a resumed loop continue bit for bit as if it had never stopped
(on the CPU). The state holds only tensors, dicts, lists and numbers and is loaded with
`weights_only=True`: a pickle planted in its place is refused, never executed.
In a data-parallel group (bench/distributed.py) rank 0 alone writes (and finally removes) the
checkpoint; every rank restores from the same file, and they check that they agree on the step.
"""
from __future__ import annotations

import contextlib
import sys
import time
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Protocol, runtime_checkable

import torch

from bench import distributed
from bench.store import atomic_torch_save, load_torch

FORMAT = 1
DEFAULT_CHECKPOINT_EVERY_S = 300.0   # at most this much pre-training is lost to a kill


@runtime_checkable
class Stateful(Protocol):
    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> Any: ...


@dataclass
class CheckpointTarget:
    """Where the loops of one scope keep their checkpoints and how often they rewrite them.

    A scope may run several loops (a two-stage pre-training): the i-th loop to start uses
    `<stem>.loop<i>.pt`. A finished loop leaves a final checkpoint, so after a restart the earlier
    loops return their results at once and the interrupted one continues where it stopped.
    """

    path: Path
    every_s: float
    loops: int = 0

    def next_path(self) -> Path:
        self.loops += 1
        return self.path.with_name(f"{self.path.stem}.loop{self.loops - 1}{self.path.suffix}")

    def remove(self) -> None:
        for old in loop_files(self.path):
            old.unlink(missing_ok=True)


def loop_files(path: Path) -> list[Path]:
    """The checkpoint files of the scope at `path` (one `<stem>.loop<i><suffix>` per loop)."""
    return sorted(path.parent.glob(f"{path.stem}.loop*{path.suffix}")) if path.parent.is_dir() else []


_ACTIVE: ContextVar[CheckpointTarget | None] = ContextVar("bench_checkpoint_target", default=None)


@contextlib.contextmanager
def resumable(path: str | Path, every_s: float) -> Iterator[CheckpointTarget]:
    """Loops inside this scope checkpoint next to `path`; the files are removed once it succeeds."""
    target = CheckpointTarget(Path(path), float(every_s))
    token = _ACTIVE.set(target)
    try:
        yield target
    finally:
        _ACTIVE.reset(token)
    if distributed.layout().main:
        target.remove()


class LoopState:
    """The bridge between one training loop and its checkpoint file (a no-op outside `resumable`)."""

    def __init__(self, target: CheckpointTarget | None, parts: dict[str, Stateful | None],
                 gen: torch.Generator, total: int) -> None:
        self.path = target.next_path() if target is not None else None
        self.every_s = target.every_s if target is not None else 0.0
        self.gen, self.total = gen, total
        self.parts = {name: part for name, part in parts.items() if part is not None}
        self.start = 0
        self._last_save = time.monotonic()

    def restore(self) -> int:
        """Load the checkpoint if there is a matching one; return the step to continue from."""
        self.start = self._load()
        distributed.agree(self.start, "the step to resume pre-training from")
        return self.start

    def _load(self) -> int:
        if self.path is None or not self.path.exists():
            return 0
        saved = load_torch(self.path)  # weights_only: a planted pickle is refused
        if saved.get("format") != FORMAT or saved.get("total") != self.total or set(saved["parts"]) != set(self.parts):
            return 0
        for name, part in self.parts.items():
            part.load_state_dict(saved["parts"][name])
        self.gen.set_state(saved["generator"])
        torch.set_rng_state(saved["torch_rng"])
        of = f" of {self.total}" if self.total else ""
        print(f"bench: resuming from {self.path} at step {saved['step']}{of}", file=sys.stderr, flush=True)
        return int(saved["step"])

    def step_done(self, step: int) -> None:
        """Call after step `step` (1-based count of finished steps); saves when the interval is up
        and after the last step (a `total` of 0: no last step, a loop that ends itself)."""
        last = bool(self.total) and step >= self.total
        if self.path is None or (not last and time.monotonic() - self._last_save < self.every_s):
            return
        if not distributed.layout().main:
            return
        atomic_torch_save(self.path, {
            "format": FORMAT, "step": step, "total": self.total,
            "parts": {name: part.state_dict() for name, part in self.parts.items()},
            "generator": self.gen.get_state(), "torch_rng": torch.get_rng_state(),
        })
        self._last_save = time.monotonic()


def loop_state(parts: dict[str, Stateful | None], gen: torch.Generator, total: int) -> LoopState:
    """A LoopState for the active `resumable` scope (or an inert one), already restored."""
    state = LoopState(_ACTIVE.get(), parts, gen, total)
    state.restore()
    return state
