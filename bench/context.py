"""What a plugin gets to run with, and what it hands back."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ContextManager, Protocol

import numpy as np
import torch

from bench.data.fingerprint import data_identity
from bench.provenance import config_hash
from bench.resume import resumable


class SpecView(Protocol):
    """What a plugin may read of its run's spec (`bench.runner.RunSpec` is one): plain data.

    A protocol, not an import of the runner, so this module stays below the runner.
    """

    @property
    def dataset(self) -> str: ...

    @property
    def root(self) -> str | None: ...

    @property
    def fraction(self) -> float: ...

    @property
    def method(self) -> str: ...

    @property
    def seed(self) -> int: ...

    @property
    def preset(self) -> str: ...

    @property
    def output(self) -> str: ...

    @property
    def smoke(self) -> Any: ...  # a bench.smoke.run.SmokeRun for `bench run --smoke`, else None

    @property
    def run_id(self) -> str: ...

    @property
    def data(self) -> str:
        """The content fingerprint of the run's data (bench.data.fingerprint), which ids hold, not the root."""
        ...

    def checkpoint_path(self, artefact: Path) -> Path: ...

    def on_data(self, dataset: str, root: str | None) -> SpecView:
        """The same run on another data set (pre-training on FFHQ-34 for CelebA-19)."""
        ...


@dataclass
class RunContext:
    """The run's spec plus where it may write and on which device it computes."""

    spec: SpecView
    device: torch.device
    progress: bool = False
    checkpoint_every_s: float | None = None  # None: the run's own loops keep no checkpoints

    @property
    def output(self) -> Path:
        return Path(self.spec.output)

    def run_checkpoint(self, stage: str) -> ContextManager[object]:
        """A resumable scope for a long loop of this run's own (the probe, a baseline's trainer): its
        checkpoint belongs to this run alone and is removed once the loop has finished. A
        requeued job then continues that loop instead of restarting it. None where
        `checkpoint_every_s` is None (smoke runs, direct calls)."""
        if self.checkpoint_every_s is None:
            return contextlib.nullcontext()
        return resumable(run_checkpoint_path(self.output, self.spec.run_id, stage), self.checkpoint_every_s)

    def artefact_key(self, method: str, identity: dict[str, Any]) -> str:
        """Pre-training depends on the method's pre-training config and the data (its content, not
        where it lies), not on seed or fraction."""
        return config_hash({"method": method, "identity": identity, "dataset": self.spec.dataset,
                            **data_identity(self.spec.dataset, self.spec.data)})[:16]

    def artefact_path(self, method: str, key: str) -> Path:
        return self.output / "artefacts" / method / f"{self.spec.dataset}-{key}.pt"


@dataclass
class RunOutput:
    """Per-test-image class maps at the original resolution, stage timings, and extras to record.

    `history` holds stage learning curves (`bench.progress.History.as_dict()`, by stage name)
    beyond those the run's `StageLog`s collect by themselves; the record keeps both.
    """

    predictions: list[np.ndarray]
    timings: dict[str, float]
    extra: dict[str, Any] = field(default_factory=dict)
    history: dict[str, Any] = field(default_factory=dict)


def run_checkpoint_path(output: str | Path, run_id: str, stage: str) -> Path:
    """Where a run's own loop `stage` keeps its resumable state (RunContext.run_checkpoint)."""
    return Path(output) / "checkpoints" / "runs" / f"{run_id}.{stage}.pt"
