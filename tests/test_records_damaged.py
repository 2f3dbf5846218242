"""Damaged records beside sound ones: every table command still prints the sound records, and
each damaged file costs exactly one warning naming the file and the field, never a traceback.

The field cases are generated from bench.records.SCHEMA (every field something reads from a
record: missing where required, and values of every JSON type), so a field added to the schema
is covered without a new test. The files cases are what a hostile or careless user can put in
records/: a FIFO, a 100,000-deep array, a huge file, a folder, non-UTF-8 bytes.
"""
from __future__ import annotations

import copy
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from bench import records
from bench.cli import main
from bench.config import load_config
from bench.jsonfile import MAX_BYTES
from bench.records import SCHEMA, is_done, read_record, schema_problem
from bench.runner import expand
from bench.store import atomic_write_json
from tests.conftest import sweep_toml

# Values of every JSON type, one of which each field refuses (and none of which may crash a table).
JSON_VALUES: list[tuple[str, Any]] = [("string", "abc"), ("list", [1]), ("null", None), ("object", {"a": 1}),
                                      ("number", 5), ("negative", -1), ("bool", True), ("empty-string", "")]


def _record(spec: Any, dice: float = 0.5) -> dict[str, Any]:
    """A sound record of `spec` (what runner.execute writes, the fields a table reads)."""
    return {"run_id": spec.run_id, "dataset": spec.dataset, "root": spec.root, "fraction": spec.fraction,
            "method": spec.method, "kind": "supervised", "seed": spec.seed, "preset": spec.preset, "params": {},
            "config": {}, "n_test": 2, "metrics": {"dice": dice, "iou": dice / 2}, "per_image": {},
            "timings": {"total_s": 3.0}, "history": {"unet train": {"step": [1, 2], "every": 1, "loss": [0.5, None]}},
            "provenance": {"config_hash": spec.config_hash, "seed": spec.seed}}


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A sweep of unet, seeds 0 and 1, both records sound, and its trivial cache built once."""
    folder = tmp_path_factory.mktemp("damaged")
    (folder / "bench.toml").write_text(sweep_toml(["unet"], seeds=(0, 1), output="out"))
    for spec in expand(load_config(folder / "bench.toml")):
        atomic_write_json(spec.record_path, _record(spec))
    assert main(["table", "--config", str(folder / "bench.toml")]) == 0  # builds out/reference/trivial.json
    return folder


@pytest.fixture
def sweep(sweep_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh copy of the sweep (records and trivial cache) for one test; its bench.toml. The
    test runs in its own folder: a record whose root is a relative path (synthetic-glands
    generates its data into the root a record names) writes there, not into the checkout."""
    shutil.copytree(sweep_dir, tmp_path / "s")
    monkeypatch.chdir(tmp_path)
    records._warned.clear()
    return tmp_path / "s" / "bench.toml"


def _spec_paths(config: Path) -> list[Path]:
    return [s.record_path for s in expand(load_config(config))]


def _table(config: Path, capsys: pytest.CaptureFixture, *extra: str) -> tuple[str, list[str]]:
    """`bench table` as a fresh process runs it (each warns once): exit 0, stdout, stderr lines."""
    records._warned.clear()
    capsys.readouterr()
    code = main(["table", "--config", str(config), *extra])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out, [line for line in err.splitlines() if line.strip()]


def _set(record: dict[str, Any], field: str, value: Any) -> None:
    """Set (or, with _MISSING, remove) a dotted field, making the objects above it if needed."""
    *parents, name = field.split(".")
    node = record
    for part in parents:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    if value is _MISSING:
        node.pop(name, None)
    else:
        node[name] = value


_MISSING = object()
FIELD_CASES = [(field, label, value) for field, required, _ in SCHEMA
               for label, value in ([("missing", _MISSING)] if required else []) + JSON_VALUES]


def test_the_schema_accepts_the_records_the_runner_writes() -> None:
    """The committed glas-small records (every method of the small preset, both protocols) pass."""
    folder = Path(__file__).resolve().parents[1] / "results" / "glas-small" / "records"
    bad = {p.name: schema_problem(json.loads(p.read_text())) for p in folder.glob("*.json")}
    assert len(bad) >= 240 and {k: v for k, v in bad.items() if v} == {}  # the converged 240 and the official


@pytest.mark.parametrize(("field", "label", "value"), FIELD_CASES, ids=[f"{f}-{label}" for f, label, _ in FIELD_CASES])
def test_a_damaged_field(sweep: Path, capsys: pytest.CaptureFixture, field: str, label: str, value: Any) -> None:
    damaged, sound = _spec_paths(sweep)
    record = json.loads(damaged.read_text())
    changed = copy.deepcopy(record)
    _set(changed, field, value)
    damaged.write_text(json.dumps(changed))
    problem = schema_problem(changed)
    for extra in ((), ("--all",)):
        out, err = _table(sweep, capsys, *extra)
        if problem is None:  # a value the tables can read: used, no warning
            assert not any("skipping record" in line for line in err), err
            continue
        assert err == [f"bench: warning: skipping record {damaged}: {problem}"], err
        assert problem.startswith(field.split(".")[0]), problem  # it names the field
        assert "| unet |" in out and " 1 |" in out, out  # the sound record's row, n = 1
    assert is_done(damaged) == (problem is None)
    assert is_done(sound)


@pytest.mark.parametrize("body", [
    pytest.param(lambda p: p.write_text("[" * 100_000 + "]" * 100_000), id="deep-array"),
    pytest.param(lambda p: p.write_text('{"a": ' * 200 + "1" + "}" * 200), id="deep-object"),
    pytest.param(lambda p: p.write_bytes(b'{"run_id": "\xff\xfe"}'), id="not-utf8"),
    pytest.param(lambda p: p.write_text("{not json"), id="not-json"),
    pytest.param(lambda p: p.write_text("[1, 2]"), id="not-an-object"),
    pytest.param(lambda p: p.mkdir(), id="a-folder"),
    pytest.param(lambda p: os.mkfifo(p), id="a-fifo"),
    pytest.param(lambda p: os.symlink("/dev/zero", p), id="a-device"),
    pytest.param(lambda p: p.write_bytes(b" " * (MAX_BYTES + 1)), id="too-large"),
])
def test_a_damaged_file_among_the_records(sweep: Path, capsys: pytest.CaptureFixture, body: Any) -> None:
    junk = sweep.parent / "out" / "records" / "x.json"
    body(junk)
    for extra in ((), ("--all",)):
        out, err = _table(sweep, capsys, *extra)
        assert "| unet |" in out and "| 2 |" in out, out  # both sound records
        assert err == [] or (len(err) == 1 and err[0].startswith(f"bench: warning: skipping record {junk}: ")), err
    assert read_record(junk) is None


def test_the_issue_cases(sweep: Path, capsys: pytest.CaptureFixture) -> None:
    """The damaged records an adversarial pass found crashing `bench table` (and `bench run`)."""
    damaged, _ = _spec_paths(sweep)
    original = json.loads(damaged.read_text())
    for field, value, expected in [("metrics.dice", "abc", "metrics: dice: expected a number or null"),
                                   ("metrics.dice", [1], "metrics: dice: expected a number or null"),
                                   ("run_id", _MISSING, "run_id: missing"),
                                   ("fraction", "x", "fraction: expected a number in (0, 1]"),
                                   ("dataset", None, "dataset: expected a non-empty string"),
                                   ("dataset", [], "dataset: expected a non-empty string"),
                                   ("timings.total_s", "5", "timings.total_s: expected a number or null")]:
        changed = copy.deepcopy(original)
        _set(changed, field, value)
        damaged.write_text(json.dumps(changed))
        records._warned.clear()
        _, err = _table(sweep, capsys, "--all")
        assert len(err) == 1 and err[0].startswith(f"bench: warning: skipping record {damaged}: {expected}"), err
    # `bench run` with nothing left to do prints the table too: a damaged record's run is redone
    # there, so here a damaged file that belongs to no run sits beside the sound ones
    damaged.write_text(json.dumps(original))
    (damaged.parent / "junk.json").write_text(json.dumps({**original, "run_id": None}))
    records._warned.clear()
    capsys.readouterr()
    assert main(["run", "--config", str(sweep)]) == 0
    out, err = capsys.readouterr()
    assert "nothing to do" in out and "| unet |" in out
    assert err.strip().splitlines() == [f"bench: warning: skipping record {damaged.parent / 'junk.json'}: "
                                        "run_id: expected a non-empty string, got None"]


def test_a_damaged_trivial_cache_is_recomputed(sweep: Path, capsys: pytest.CaptureFixture) -> None:
    cache = sweep.parent / "out" / "reference" / "trivial.json"
    good = json.loads(cache.read_text())
    key = next(iter(good))
    for damage in [{key: {**good[key], "metrics": "abc"}}, {key: "abc"}, [1, 2], "[" * 100_000]:
        cache.write_text(damage if isinstance(damage, str) else json.dumps(damage))
        out, err = _table(sweep, capsys)
        assert "| trivial (reference) |" in out, out
        assert len(err) == 1 and f"{cache}" in err[0] and "recomputing it" in err[0], err
        assert json.loads(cache.read_text()) == good  # recomputed and stored again


def test_an_unwritable_trivial_cache_still_prints_the_row(sweep: Path, capsys: pytest.CaptureFixture) -> None:
    reference = sweep.parent / "out" / "reference"
    shutil.rmtree(reference)
    reference.write_text("a file where the folder should be")
    out, err = _table(sweep, capsys)
    assert "| trivial (reference) |" in out and len(err) == 1 and "cannot write the trivial cache" in err[0], err


def test_records_are_strict_json(tmp_path: Path) -> None:
    """NaN and Infinity are written as null (other JSON readers refuse the tokens), and read back."""
    atomic_write_json(tmp_path / "r.json", {"a": float("nan"), "b": [float("inf"), 1.0], "c": {"d": -float("inf")}})
    text = (tmp_path / "r.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"a": None, "b": [None, 1.0], "c": {"d": None}}
    (tmp_path / "old.json").write_text('{"metrics": {"dice": NaN}}')  # an older bench wrote the token
    from bench.jsonfile import read_json

    assert read_json(tmp_path / "old.json") == {"metrics": {"dice": None}}
