"""The `[smoke]` table of bench.toml: how small `bench run --smoke` makes each run.

Checked like the rest of bench.toml, so a typo fails before anything runs.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.errors import ConfigError

FOLDER = "smoke"  # smoke runs write under <output>/smoke/ (records, artefacts, predictions)


@dataclass(frozen=True)
class SmokeConfig:
    """The `[smoke]` table of bench.toml: how small a smoke run is, and how estimates are padded."""

    steps: int = 3                 # optimisation steps per stage (the first one warms up)
    epochs: int = 1                # epochs of the probe and of the supervised trainer
    labelled: int = 2              # labelled images per run
    test: int = 2                  # test images per run
    # Caps on the training batches and the probe's members (None, `0` in bench.toml: the
    # configured ones). At 1 and 2 the paper preset's smoke of every method fits 12 GB (the
    # configured batch 128 of mdm's 311M-parameter UNet took 21 GB); times are scaled to the real ones.
    batch: int | None = 1
    probe_ensemble: int | None = 2
    one_window: bool = True        # cut every image to one window (a full image takes minutes on a CPU)
    time_margin: float = 1.5       # suggested Slurm limits: estimate x margin
    mem_margin: float = 1.25



def parse_smoke(value: Any, path: str | Path) -> SmokeConfig:
    """`[smoke]` -> SmokeConfig, or one ConfigError line naming the key."""
    if value is None:
        return SmokeConfig()
    if not isinstance(value, dict):
        raise ConfigError(path, "smoke", "expected a table [smoke]")
    known = {f.name: f for f in dataclasses.fields(SmokeConfig)}
    out: dict[str, Any] = {}
    for key, val in value.items():
        if key not in known:
            raise ConfigError(path, f"smoke.{key}", f"unknown key; expected one of {', '.join(sorted(known))}")
        if key in ("batch", "probe_ensemble"):
            if not (type(val) is int and val >= 0):
                raise ConfigError(path, f"smoke.{key}", "expected a positive integer, or 0 for no cap")
            val = val or None
        elif key in ("steps", "epochs", "labelled", "test") and not (type(val) is int and val >= 1):
            raise ConfigError(path, f"smoke.{key}", "expected a positive integer")
        elif key == "one_window" and not isinstance(val, bool):
            raise ConfigError(path, "smoke.one_window", "expected true or false")
        elif key.endswith("_margin") and (isinstance(val, bool) or not isinstance(val, (int, float))
                                          or not 1 <= val < math.inf):  # nan and inf fail too
            raise ConfigError(path, f"smoke.{key}", "expected a finite number >= 1")
        out[key] = float(val) if key.endswith("_margin") else val
    return SmokeConfig(**out)
