"""The rows of a sweep's table: its records (of its configuration, or every one with `every`),
aggregated per cell, with the trivial reference row of each cell. `bench table`, the README's
small-preset table and anything else that tabulates a sweep select their records here, once.

`references` are read-only folders of records (`--reference DIR`, e.g. the committed
results/glas-small) shown beside the sweep's own, each record tagged with its folder. Without
`every` a reference record is shown only where it is of this sweep's configuration: its method's
Config at the sweep's preset (with the sweep's `[params.METHOD]`, if any) on data with the same
content fingerprint, the config hash a run id ends with; any other (another preset, other data)
is never mixed into a row, and `every` shows it in a row of its own.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

from bench import registry
from bench.config import SweepConfig
from bench.errors import BenchError
from bench.provenance import SHORT_HASH
from bench.records import load_records
from bench.runner import RunSpec, expand
from bench.tables.cells import SOURCE, RecordRow, aggregate, config_id, tabulable
from bench.trivial import cells_of, reference_rows


@dataclass(frozen=True)
class SweepRows:
    rows: list[RecordRow]   # the cells' rows, then the reference rows
    records: int            # how many records they aggregate
    skipped: int            # records without dataset, fraction, method or seed: left out
    selected: tuple[dict[str, Any], ...] = ()  # those records, the references' tagged with SOURCE


def sweep_records(sweep: SweepConfig, every: bool = False, runs: list[RunSpec] | None = None,
                  references: Sequence[str] = (), loaded: list[dict[str, Any]] | None = None
                  ) -> tuple[list[dict[str, Any]], int]:
    """The tabulable records and how many were skipped. Without `every`, only the records whose
    run ids the sweep expands to (its configuration; `runs`, where the caller has expanded it
    already); with it, every record in its output folder. Then the `references`' records.
    `loaded`: the output folder's records, where the caller has read them already."""
    records, skipped = tabulable(load_records(sweep.output) if loaded is None else loaded)
    if not every:
        wanted = {r.run_id for r in (expand(sweep) if runs is None else runs)}
        records = [r for r in records if r["run_id"] in wanted]
    refs, ref_skipped = reference_records(sweep, references, every, {r.get("run_id") for r in records})
    return records + refs, skipped + ref_skipped


def reference_records(sweep: SweepConfig, folders: Sequence[str], every: bool = False,
                      have: set[Any] | None = None) -> tuple[list[dict[str, Any]], int]:
    """The records of the reference `folders`, tagged with their folder (as given), and how many
    were skipped. A run id the sweep has a record of, or an earlier folder had, is left out; a
    folder that is the sweep's own output adds nothing."""
    seen = set(have or ())
    out: list[dict[str, Any]] = []
    skipped = 0
    own = Path(sweep.output).resolve()
    for folder in folders:
        path = Path(folder).expanduser()
        if not (path / "records").is_dir():
            raise BenchError(f"--reference {folder}: no records/ folder there (a reference is an output "
                             "folder of finished runs, e.g. results/glas-small)")
        if path.resolve() == own:
            continue
        records, n = tabulable(load_records(path))
        skipped += n
        if not every:
            records = of_configuration(sweep, records, folder)
        for r in records:
            if r.get("run_id") not in seen:
                seen.add(r.get("run_id"))
                out.append({**r, SOURCE: str(folder)})
    return out, skipped


def of_configuration(sweep: SweepConfig, records: list[dict[str, Any]], folder: str) -> list[dict[str, Any]]:
    """The records whose cell and config hash are those the sweep would give their method (any
    seed: seeds pair records, they are not a configuration). A method this bench does not have
    cannot be checked: its records are left out, with one line saying so."""
    known = set(registry.names())
    methods = sorted({r["method"] for r in records if r["method"] in known})
    unknown = sorted({str(r["method"]) for r in records} - set(methods))
    if unknown:
        print(f"bench: warning: --reference {folder}: records of {', '.join(unknown)} left out "
              "(not a registered method, so their configuration cannot be checked)", file=sys.stderr)
    if not methods:
        return []
    params = {m: sweep.params[m] for m in methods if m in sweep.params}
    specs = expand(replace(sweep, methods=tuple(methods), params=params, seeds=sweep.seeds[:1]))
    wanted = {(s.dataset, s.fraction, s.method, s.config_hash[:SHORT_HASH]) for s in specs}
    return [r for r in records if (r["dataset"], float(r["fraction"]), r["method"], config_id(r)) in wanted]


def sweep_rows(sweep: SweepConfig, every: bool = False, runs: list[RunSpec] | None = None,
               references: Sequence[str] = (), loaded: list[dict[str, Any]] | None = None) -> SweepRows:
    """The rows of `sweep_records`: one per cell (and configuration, with `every`)."""
    records, skipped = sweep_records(sweep, every, runs, references, loaded)
    trivial = reference_rows(sweep.output, cells_of(records, sweep)) if records else []
    return SweepRows(aggregate(records, trivial), len(records), skipped, tuple(records))
