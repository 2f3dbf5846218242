"""Progress of a training stage: a bar on a terminal, periodic log lines elsewhere, and the history.

Every step loop of bench (pre-training, the probe's epochs, a baseline's epochs) wraps itself in
one `StageLog`. Where a person watches (`progress` on and stderr a terminal) it draws a tqdm bar;
otherwise (a Slurm job's log, `--no-progress`, a pipe) it writes one line to the "bench" logger
every `LogSettings.every_s` seconds: stage, step, loss, rate and ETA. Either way it keeps the
stage's history (`History`): means of the logged values over windows of steps, at most
`max_points` of them, so a record can show whether a stage converged without growing with it.

`setup_logging` is called once by the CLI (and by Slurm jobs): -q shows warnings only, -v adds
debug lines and the periodic lines even while a bar is shown.
"""
from __future__ import annotations

import contextlib
import logging
import math
import sys
import time
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Iterator

from tqdm.auto import tqdm

log = logging.getLogger("bench")


@dataclass
class LogSettings:
    every_s: float = 30.0      # seconds between two progress lines of a stage
    max_points: int = 256      # most history points kept per stage (even)
    verbose: bool = False      # periodic lines also while a bar is shown


SETTINGS = LogSettings()


class _TqdmHandler(logging.StreamHandler):
    """Writes through tqdm so a line never tears a bar that is being drawn."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # logging must never raise into the training loop
            self.handleError(record)


def setup_logging(verbosity: int = 0, every_s: float | None = None) -> None:
    """verbosity -1 (quiet): warnings only; 0: progress lines; 1 (verbose): debug lines too."""
    level = logging.WARNING if verbosity < 0 else logging.DEBUG if verbosity > 0 else logging.INFO
    log.setLevel(level)
    if not any(isinstance(h, _TqdmHandler) for h in log.handlers):
        handler = _TqdmHandler()
        handler.setFormatter(logging.Formatter("bench: %(message)s"))
        log.addHandler(handler)
    log.propagate = False
    SETTINGS.verbose = verbosity > 0
    if every_s is not None:
        if not every_s > 0:
            raise ValueError(f"the log interval must be positive, got {every_s}")
        SETTINGS.every_s = float(every_s)


def ensure_logging() -> None:
    """Configure the "bench" logger with the defaults unless the CLI already did (Slurm jobs)."""
    if not any(isinstance(h, _TqdmHandler) for h in log.handlers):
        setup_logging()


class History:
    """Window means of named values over steps; windows double when the point budget is full."""

    def __init__(self, max_points: int) -> None:
        self.max_points = max(2, max_points - max_points % 2)
        self.stride = 1
        self.steps: list[int] = []
        self.values: dict[str, list[float]] = {}
        self._sums: dict[str, float] = {}
        self._count = 0
        self._last = 0

    def add(self, step: int, values: dict[str, float]) -> None:
        for key, value in values.items():
            self._sums[key] = self._sums.get(key, 0.0) + float(value)
        self._count += 1
        self._last = step
        if self._count >= self.stride:
            self._emit()
        if len(self.steps) >= self.max_points:
            self._halve()

    def _emit(self) -> None:
        if not self._count:
            return
        self.steps.append(self._last)
        for key, total in self._sums.items():
            self.values.setdefault(key, [math.nan] * (len(self.steps) - 1)).append(total / self._count)
        self._sums, self._count = {}, 0

    def _halve(self) -> None:
        self.steps = self.steps[1::2]
        self.values = {k: [(a + b) / 2 for a, b in zip(v[0::2], v[1::2])] for k, v in self.values.items()}
        self.stride *= 2

    def state_dict(self) -> dict[str, Any]:
        """Plain lists and numbers (a resume checkpoint keeps the history of the steps before it)."""
        return {"stride": self.stride, "steps": list(self.steps), "values": dict(self.values),
                "sums": dict(self._sums), "count": self._count, "last": self._last}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.stride, self.steps = int(state["stride"]), list(state["steps"])
        self.values = {k: list(v) for k, v in state["values"].items()}
        self._sums, self._count, self._last = dict(state["sums"]), int(state["count"]), int(state["last"])

    def as_dict(self) -> dict[str, Any]:
        """{"step": [...], "every": window size, "<value>": [...]} (JSON-ready: a non-finite
        mean is None); each point is the mean over the `every` steps ending at its step, the
        last window may be shorter."""
        self._emit()
        return {"step": list(self.steps), "every": self.stride,
                **{k: [x if math.isfinite(x) else None for x in v] for k, v in self.values.items()}}


class StageLog:
    """Wraps a stage's step loop: `update(step, loss=...)` after each step, `close()` at the end."""

    def __init__(self, stage: str, total: int | None, progress: bool, unit: str = "step",
                 initial: int = 0, history: History | None = None,
                 settings: LogSettings = SETTINGS) -> None:
        self.stage, self.total, self.unit, self.settings = stage, total, unit, settings
        self.history = history if history is not None else History(settings.max_points)
        watched = progress and sys.stderr.isatty()
        self.bar = tqdm(total=total, initial=initial, desc=stage, unit=unit, leave=False,
                        disable=not watched)
        self.lines = not watched or settings.verbose
        self.start_step = self.step = initial
        self.start = self._last_line = time.monotonic()
        self.last: dict[str, float] = {}

    def __enter__(self) -> StageLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, step: int, **values: float) -> None:
        """Step `step` (1-based count of finished steps) is done with these values (loss, ...)."""
        self.bar.update(step - self.step)
        self.step = step
        self.last = {k: float(v) for k, v in values.items()}
        self.history.add(step, self.last)
        self.bar.set_postfix({k: f"{v:.4g}" for k, v in self.last.items()}, refresh=False)
        now = time.monotonic()
        if self.lines and now - self._last_line >= self.settings.every_s:
            self._last_line = now
            log.info("%s", self.describe(now))

    def describe(self, now: float) -> str:
        """`stage: step 120/600 (20%), loss 0.1234, 3.1 step/s, ETA 2m35s`."""
        done = self.step - self.start_step
        rate = done / max(now - self.start, 1e-9)
        where = f"{self.unit} {self.step}" + (f"/{self.total} ({100 * self.step / self.total:.0f}%)"
                                               if self.total else "")
        parts = [f"{self.stage}: {where}", *(f"{k} {v:.4g}" for k, v in self.last.items()),
                 f"{rate:.3g} {self.unit}/s"]
        if self.total and rate > 0:
            parts.append(f"ETA {_duration((self.total - self.step) / rate)}")
        return ", ".join(parts)

    def close(self) -> None:
        if self.bar.disable and self.lines and self.step > self.start_step:
            elapsed = time.monotonic() - self.start
            final = ", ".join(f"{k} {v:.4g}" for k, v in self.last.items())
            log.info("%s: done, %d %ss in %s%s", self.stage, self.step, self.unit, _duration(elapsed),
                     f", last {final}" if final else "")
        self.bar.close()
        collected = _COLLECTOR.get()
        if collected is not None:
            collected[self.stage] = self.history.as_dict()


_COLLECTOR: ContextVar[dict[str, Any] | None] = ContextVar("bench_stage_histories", default=None)


@contextlib.contextmanager
def collect_histories() -> Iterator[dict[str, Any]]:
    """Every StageLog closed inside the block adds `{stage: history}` to the yielded dict (how a
    method's pre-training loops hand their curves to the artefact without passing them along)."""
    collected: dict[str, Any] = {}
    token = _COLLECTOR.set(collected)
    try:
        yield collected
    finally:
        _COLLECTOR.reset(token)


def _duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def add_histories(histories: dict[str, Any]) -> None:
    """Hand finished stages' histories (e.g. the pre-training curves stored in an artefact) to the
    active `collect_histories` block, if any."""
    collected = _COLLECTOR.get()
    if collected is not None:
        collected.update(histories)
