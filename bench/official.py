"""The official protocol's per-data-set numbers and its stopping rule (REFERENCE §6, §8).

zx-pan/mdm's scripts take these from `experiments/<dataset>_<n>/*.json`: the medical probe
(`train_interpreter_medical.py`) and the supervised baselines (`train_unet.py`) each stop on the
loss of an epoch's LAST batch, not on a validation score and not on an epoch mean. Data sets the
official code never ran (synthetic-glands, any other medical set) take GlaS's numbers, its
nearest official relative. Everything else the protocol fixes is a Config pin (bench.protocol).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


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


def probe_loop(dataset: str) -> ProbeLoop:
    return PROBE_LOOPS.get(dataset, PROBE_LOOPS[FALLBACK])


def train_loop(dataset: str) -> TrainLoop:
    return TRAIN_LOOPS.get(dataset, TRAIN_LOOPS[FALLBACK])


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
