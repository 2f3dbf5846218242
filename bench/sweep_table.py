"""The rows of a sweep's table: its records (of its configuration, or every one with `every`),
aggregated per cell, with the trivial reference row of each cell. `bench table`, the README's
small-preset table and anything else that tabulates a sweep select their records here, once."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.config import SweepConfig
from bench.records import load_records
from bench.runner import expand
from bench.table import RecordRow, aggregate, tabulable
from bench.trivial import cells_of, reference_rows


@dataclass(frozen=True)
class SweepRows:
    rows: list[RecordRow]   # the cells' rows, then the reference rows
    records: int            # how many records they aggregate
    skipped: int            # records without dataset, fraction, method or seed: left out


def sweep_records(sweep: SweepConfig, every: bool = False,
                  loaded: list[dict[str, Any]] | None = None) -> tuple[list[dict[str, Any]], int]:
    """The tabulable records and how many were skipped. Without `every`, only the records whose
    run ids the sweep expands to (its configuration); with it, every record in its output folder.
    `loaded`: that folder's records, where the caller has read them already."""
    records, skipped = tabulable(load_records(sweep.output) if loaded is None else loaded)
    if not every:
        wanted = {r.run_id for r in expand(sweep)}
        records = [r for r in records if r["run_id"] in wanted]
    return records, skipped


def sweep_rows(sweep: SweepConfig, every: bool = False, loaded: list[dict[str, Any]] | None = None) -> SweepRows:
    """The rows of `sweep_records`: one per cell (and configuration, with `every`)."""
    records, skipped = sweep_records(sweep, every, loaded)
    references = reference_rows(sweep.output, cells_of(records, sweep)) if records else []
    return SweepRows(aggregate(records, references), len(records), skipped)
