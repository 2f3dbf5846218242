"""Reading and locating run records (one JSON file per finished run).

A record is read defensively: only a regular file of bounded size and nesting (bench.jsonfile),
and used only if it passes one schema check of the fields the tables, figures and reports read
(`SCHEMA`). A record that fails is skipped with one warning naming the file and the field, and
its run counts as not done, so the next `bench run` redoes it and writes a sound record.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any, Callable

from bench.jsonfile import JSONFileError, read_json
from bench.store import TMP_PREFIX

# What a field must hold: a check of its value, returning what is wrong (None: nothing).
Check = Callable[[Any], "str | None"]

_warned: set[tuple[str, str]] = set()  # (file, problem) already reported by this process


def record_path(output: str | Path, run_id: str) -> Path:
    return Path(output) / "records" / f"{run_id}.json"


def claim_path(output: str | Path, run_id: str) -> Path:
    """The lock a worker holds while doing run `run_id` (see bench.runner)."""
    return Path(output) / "locks" / f"{run_id}.lock"


# --- the checks the schema is made of ---------------------------------------------------------------
def is_number(value: Any) -> bool:
    """A finite int or float (not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _text(value: Any) -> str | None:
    return None if isinstance(value, str) and value else f"expected a non-empty string, got {_show(value)}"


def _text_or_null(value: Any) -> str | None:
    return None if value is None or _text(value) is None else f"expected a non-empty string or null, got {_show(value)}"


def _fraction(value: Any) -> str | None:
    return None if is_number(value) and 0 < value <= 1 else f"expected a number in (0, 1], got {_show(value)}"


def _count(value: Any) -> str | None:
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
    return None if ok else f"expected a whole number >= 0, got {_show(value)}"


def _number(value: Any) -> str | None:
    return None if is_number(value) else f"expected a number, got {_show(value)}"


def _number_or_null(value: Any) -> str | None:
    return None if value is None or is_number(value) else f"expected a number or null, got {_show(value)}"


def _object(value: Any) -> str | None:
    return None if isinstance(value, dict) else f"expected an object, got {_show(value)}"


def _scores(value: Any) -> str | None:
    """An object of numbers (null: a score that was undefined)."""
    if not isinstance(value, dict):
        return f"expected an object of scores, got {_show(value)}"
    for key, score in value.items():
        problem = _number_or_null(score)
        if problem is not None:
            return f"{key}: {problem}"
    return None


def _objects(value: Any) -> str | None:
    """An object whose values are objects (history: stage -> curves; smoke stages)."""
    if not isinstance(value, dict):
        return f"expected an object, got {_show(value)}"
    bad = next((k for k, v in value.items() if not isinstance(v, dict)), None)
    return None if bad is None else f"{bad}: expected an object, got {_show(value[bad])}"


def _history(value: Any) -> str | None:
    """stage -> {"step": [...], "every": n, curve name: [...]} (bench.progress.History.as_dict)."""
    problem = _objects(value)
    if problem is not None:
        return problem
    for stage, curves in value.items():
        steps = curves.get("step", [])
        if not isinstance(steps, list) or not all(is_number(s) for s in steps):
            return f"{stage}.step: expected a list of numbers, got {_show(steps)}"
        for name, points in curves.items():
            if isinstance(points, list) and not all(p is None or is_number(p) for p in points):
                return f"{stage}.{name}: expected a list of numbers (or null)"
    return None


def _scores_by_severity(value: Any) -> str | None:
    """The robustness results: corruption -> severity -> scores."""
    problem = _objects(value)
    if problem is not None:
        return problem
    for name, by_severity in value.items():
        for severity, scores in by_severity.items():
            problem = _scores(scores)
            if problem is not None:
                return f"{name}.{severity}: {problem}"
    return None


def _stages(value: Any) -> str | None:
    """A smoke record's per-stage measurements: each an object with its unit and full-run estimate."""
    problem = _objects(value)
    if problem is not None:
        return problem
    for name, stage in value.items():
        for key, check in (("unit", _text), ("full_s", _number), ("s_per_unit", _number), ("batch_scale", _number)):
            problem = check(stage.get(key))
            if problem is not None:
                return f"{name}.{key}: {problem}"
    return None


# (dotted field, required, check): every field something reads from a record. A field inside an
# absent optional object is not checked; a record without a required field is skipped.
SCHEMA: tuple[tuple[str, bool, Check], ...] = (
    ("run_id", True, _text), ("dataset", True, _text), ("method", True, _text), ("fraction", True, _fraction),
    ("seed", True, _count), ("metrics", True, _scores),
    ("preset", False, _text), ("kind", False, _text), ("root", False, _text_or_null),
    ("n_test", False, _count), ("n_train", False, _count),
    ("timings", False, _object), ("timings.total_s", False, _number_or_null),
    ("provenance", False, _object), ("provenance.config_hash", False, _text),
    ("history", False, _history),
    ("robustness", False, _object), ("robustness.clean", False, _scores),
    ("robustness.corruptions", False, _scores_by_severity),
    ("smoke", False, _object), ("smoke.device", True, _text), ("smoke.threads", True, _count),
    ("smoke.peak_memory", True, _scores), ("smoke.peak_memory.rss", True, _number),
    ("smoke.stages", True, _stages),
)


def schema_problem(record: Any) -> str | None:
    """`FIELD: what is wrong` for the first field of `record` that breaks `SCHEMA`, else None."""
    if not isinstance(record, dict):
        return f"(record): expected an object, got {_show(record)}"
    for field, required, check in SCHEMA:
        *parents, name = field.split(".")
        node: Any = record
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict):  # inside an optional object that is absent (its own entry checks it)
            continue
        if name not in node:
            if required:
                return f"{field}: missing"
            continue
        problem = check(node[name])
        if problem is not None:
            return f"{field}: {problem}"
    return None


def read_record(path: str | Path, warn: bool = True) -> dict[str, Any] | None:
    """The record at `path`, or None if it is absent or fails `schema_problem` (then the run
    counts as not done). A record that is there but unusable is reported once, with `warn`."""
    try:
        record = read_json(path)
    except FileNotFoundError:
        return None
    except JSONFileError as exc:
        _warn(path, str(exc), warn)
        return None
    problem = schema_problem(record)
    if problem is not None:
        _warn(path, problem, warn)
        return None
    return record


def is_done(path: str | Path) -> bool:
    """Whether the run's record is there and sound. A folder where the record belongs is no record
    and is not warned of here: `bench run` refuses it in one line (runner.check_output_layout)."""
    return read_record(path, warn=not Path(path).is_dir()) is not None


def load_records(output: str | Path, smoke: bool = False) -> list[dict[str, Any]]:
    """Every sound record under output/records; each unusable one is reported once and skipped.

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
        if record is not None and ("smoke" in record) == smoke:
            records.append(record)
    return records


def _warn(path: str | Path, problem: str, warn: bool) -> None:
    if warn and (str(path), problem) not in _warned:
        _warned.add((str(path), problem))
        print(f"bench: warning: skipping record {path}: {problem}", file=sys.stderr)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
