"""`bench run --smoke`: every run of the sweep at its real shapes for a few steps, measured.

`config` is the `[smoke]` table of bench.toml, `run` makes and runs a smoke run (the capped
config, the cut data, the measured steps), `estimates` turns its measurements into full-run
estimates, `report` prints them with the Slurm limits they suggest. Only the settings are
re-exported here, since reading bench.toml needs them: importing `bench.smoke` loads no run code,
and callers of the rest name its module (`from bench.smoke.run import smoke_specs`).
"""
from __future__ import annotations

from bench.smoke.config import FOLDER, SmokeConfig, parse_smoke

__all__ = ["FOLDER", "SmokeConfig", "parse_smoke"]
