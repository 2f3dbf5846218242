"""The job book: which Slurm job runs which run, kept in `output/slurm/jobs.json`.

Records say what is done; only the scheduler knows what is pending, running or died, and it
knows jobs by id. The book maps each run id (and each pre-training artefact) to the id of the
latest job submitted for it, so `bench status` and a rerun can ask the scheduler about exactly
those jobs. One book per output folder: run ids are unique across sweeps, so sweeps sharing an
output folder share their bookkeeping too. Updates merge under a lock and are written atomically.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from bench.store import atomic_write_json, file_lock


@dataclass
class JobBook:
    runs: dict[str, str] = field(default_factory=dict)       # run id -> job id ("123" / "123_4")
    pretrain: dict[str, str] = field(default_factory=dict)   # artefact (relative to output) -> job id
    snapshots: dict[str, str] = field(default_factory=dict)  # job id -> code snapshot folder


def book_path(output: str | Path) -> Path:
    return Path(output) / "slurm" / "jobs.json"


def load_book(output: str | Path) -> JobBook:
    """The book, or an empty one if nothing was ever submitted from this output folder."""
    try:
        raw = json.loads(book_path(output).read_text())
    except (OSError, json.JSONDecodeError):
        return JobBook()
    return JobBook(runs=dict(raw.get("runs", {})), pretrain=dict(raw.get("pretrain", {})),
                   snapshots=dict(raw.get("snapshots", {})))


def add_to_book(output: str | Path, new: JobBook) -> None:
    """Merge newly submitted jobs into the book (newer ids replace older ones)."""
    path = book_path(output)
    with file_lock(path.with_name(path.name + ".lock")):
        book = load_book(output)
        book.runs.update(new.runs)
        book.pretrain.update(new.pretrain)
        book.snapshots.update(new.snapshots)
        atomic_write_json(path, {"runs": book.runs, "pretrain": book.pretrain, "snapshots": book.snapshots,
                                 "updated": datetime.now(timezone.utc).isoformat(timespec="seconds")})
