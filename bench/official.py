"""The official protocol's per-data-set numbers and its stopping rule (REFERENCE §6, §8).

zx-pan/mdm's scripts take these from `experiments/<dataset>_<n>/*.json`: the medical probe
(`train_interpreter_medical.py`) and the supervised baselines (`train_unet.py`) each stop on the
loss of an epoch's LAST batch, not on a validation score and not on an epoch mean. Data sets the
official code never ran (synthetic-glands, any other medical set) take GlaS's numbers, its
nearest official relative. Everything else the protocol fixes is a Config pin (bench.protocol).
"""
from __future__ import annotations

import contextlib
import math
from contextvars import ContextVar
from dataclasses import dataclass, replace
from typing import Any, Iterator


@dataclass(frozen=True)
class ProbeLoop:
    """The single-classifier medical probe: `crops_per_step` training images per step, each one
    fresh random crop; checked once per epoch for epochs (0-based) after `start_epoch`."""

    crops_per_step: int
    start_epoch: int
    max_break: int = 20
    max_epochs: int = 5000


@dataclass(frozen=True)
class TrainLoop:
    """The supervised loop: checked at each epoch's last batch once the ITERATION count exceeds
    `start_iteration` (the official code compares iterations with its `start_epoch` key; that
    quirk is the official behaviour and is kept). `batch`: the data set's batch, where it
    overrides the network's (MoNuSeg's config uses 4 for every network)."""

    start_iteration: int
    max_break: int
    batch: int | None = None
    max_epochs: int = 5000


PROBE_LOOPS: dict[str, ProbeLoop] = {
    "glas": ProbeLoop(crops_per_step=1, start_epoch=40),
    "monuseg": ProbeLoop(crops_per_step=16, start_epoch=30),
}
TRAIN_LOOPS: dict[str, TrainLoop] = {
    "glas": TrainLoop(start_iteration=30, max_break=50),
    "monuseg": TrainLoop(start_iteration=100, max_break=60, batch=4),
}
FALLBACK = "glas"


# A smoke run's caps on the official loops' counts (epochs, images a step): their counts live here,
# not in a Config field a smoke override could cap. None outside `capped`.
_CAPS: ContextVar[tuple[int, int | None] | None] = ContextVar("bench_official_caps", default=None)


@contextlib.contextmanager
def capped(epochs: int, batch: int | None) -> Iterator[None]:
    """Official loops made inside run at most `epochs` epochs of at most `batch` images a step
    (`bench run --smoke`: a few measured steps, never a record of a real run)."""
    token = _CAPS.set((epochs, batch))
    try:
        yield
    finally:
        _CAPS.reset(token)


def probe_loop(dataset: str) -> ProbeLoop:
    loop = PROBE_LOOPS.get(dataset, PROBE_LOOPS[FALLBACK])
    caps = _CAPS.get()
    if caps is None:
        return loop
    epochs, batch = caps
    return replace(loop, max_epochs=min(loop.max_epochs, epochs),
                   crops_per_step=min(loop.crops_per_step, batch or loop.crops_per_step))


def train_loop(dataset: str, network_batch: int | None = None) -> TrainLoop:
    """The data set's loop; with `network_batch` (the network's own), `batch` is the one it runs."""
    loop = TRAIN_LOOPS.get(dataset, TRAIN_LOOPS[FALLBACK])
    if network_batch is not None:
        loop = replace(loop, batch=loop.batch or network_batch)
    caps = _CAPS.get()
    if caps is None:
        return loop
    epochs, batch = caps
    capped_batch = min(loop.batch, batch) if loop.batch is not None and batch is not None else loop.batch
    return replace(loop, max_epochs=min(loop.max_epochs, epochs), batch=capped_batch)


class LastBatchStop:
    """The official stopping rule: at each check past `start`, the last batch's loss against
    the best checked so far; a non-improvement adds one to a counter an improvement resets, and
    the loop stops once the counter exceeds `max_break`. The model at the stop is kept."""

    def __init__(self, start: int, max_break: int) -> None:
        self.start, self.max_break = start, max_break
        self.best, self.count, self.stopped = math.inf, 0, False

    def check(self, position: int, loss: float) -> bool:
        """`position`: the epoch index (probe) or iterations done (supervised); True: stop now."""
        if position <= self.start:
            return False
        if loss < self.best:
            self.best, self.count = loss, 0
        else:
            self.count += 1
        self.stopped = self.count > self.max_break
        return self.stopped

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "count": self.count, "stopped": self.stopped}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.count, self.stopped = float(state["best"]), int(state["count"]), bool(state["stopped"])
