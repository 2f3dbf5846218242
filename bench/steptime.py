"""Per-stage step times and peak memory of one process: what `bench run --smoke` measures.

A primitive with no bench imports: the training loops (pre-training, probe, supervised) call
`STEPS.start(stage)` before their first step and `STEPS.tick(stage)` after each one, which costs
a clock read. `bench.smoke.estimates` turns the durations into full-run estimates.
"""
from __future__ import annotations

import resource
import sys
import time
from pathlib import Path

import torch


class StepTimes:
    """Durations of each stage's steps, in order (the first includes warm-up)."""

    def __init__(self) -> None:
        self.enabled = False  # off outside smoke runs: no clock reads, no GPU synchronisation
        self.steps: dict[str, list[float]] = {}
        self._last: dict[str, float] = {}

    def reset(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.steps.clear()
        self._last.clear()

    def start(self, stage: str) -> None:
        if self.enabled:
            _sync()
            self._last[stage] = time.perf_counter()

    def tick(self, stage: str) -> None:
        if not self.enabled:
            return
        _sync()
        now = time.perf_counter()
        self.steps.setdefault(stage, []).append(now - self._last.get(stage, now))
        self._last[stage] = now

    def add(self, stage: str, seconds: float) -> None:
        """One step measured by the caller (a validation pass, say)."""
        if self.enabled:
            self.steps.setdefault(stage, []).append(seconds)


STEPS = StepTimes()


def _sync() -> None:
    """Wait for queued GPU work, so a step's time is its own (CUDA runs asynchronously)."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak: Linux's VmHWM is reset by writing 5 to clear_refs; CUDA's counter too."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:  # not Linux: ru_maxrss then is the process's peak since it started
        pass
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_rss_bytes() -> int:
    """The process's peak resident set since the last reset (VmHWM), else since it started."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB on Linux


def peak_memory(device: torch.device) -> dict[str, int]:
    """{"rss": bytes} and, on a GPU, {"cuda_allocated": torch.cuda.max_memory_allocated}."""
    out = {"rss": peak_rss_bytes()}
    if device.type == "cuda":
        out["cuda_allocated"] = int(torch.cuda.max_memory_allocated(device))
    return out
