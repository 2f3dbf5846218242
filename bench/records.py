"""Reading and locating run records (one JSON file per finished run)."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from bench.store import TMP_PREFIX


def record_path(output: str | Path, run_id: str) -> Path:
    return Path(output) / "records" / f"{run_id}.json"


def claim_path(output: str | Path, run_id: str) -> Path:
    """The lock a worker holds while doing run `run_id` (see bench.runner)."""
    return Path(output) / "locks" / f"{run_id}.lock"


def read_record(path: str | Path) -> dict[str, Any] | None:
    """The record, or None if it is absent or unreadable (then the run counts as not done)."""
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return record if isinstance(record, dict) and "metrics" in record else None


def is_done(path: str | Path) -> bool:
    return read_record(path) is not None


def load_records(output: str | Path, smoke: bool = False) -> list[dict[str, Any]]:
    """Every readable record under output/records; unreadable ones are reported and skipped.

    Smoke records (`bench run --smoke`, marked by a `smoke` field) are left out unless `smoke`:
    they live in a folder of their own, and even one copied into a real output never reaches a
    table or a report. With `smoke`, only they are returned.
    """
    folder = Path(output) / "records"
    records = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        if path.name.startswith(TMP_PREFIX):
            continue
        record = read_record(path)
        if record is None:
            print(f"bench: warning: skipping unreadable record {path}", file=sys.stderr)
            continue
        if ("smoke" in record) == smoke:
            records.append(record)
    return records
