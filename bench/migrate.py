"""`bench records migrate`: records named by their data's root path, renamed to content ids.

A run id once held the path of the data's root; it now holds the fingerprint of the data's files
(bench.data.fingerprint). A record of the old kind keeps everything its id was made of (data
set, root, fraction, method, preset and its resolved Config), so its old config hash is rebuilt
from the record and checked against the one it carries, and its new one is made with the root
replaced by the fingerprint of the files at that root (or where `--root NAME=PATH` says they are
now). Migrate where the records' data still is and before it changes: the fingerprint says which
files the runs read, and only the folder they read can tell.

Nothing half-done is ever left: every new record is written first (atomically, beside the old
ones, which stay), read back, and only then are the old files removed; a kill in between leaves
both, and running the command again finishes the job. A record whose id cannot be rebuilt from
its fields (a robustness or smoke run, a hand-made file) is left as it is, and said so.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import registry
from bench.data.fingerprint import data_identity, fingerprint
from bench.errors import BenchError, ConfigError
from bench.protocol import identity_of
from bench.provenance import SHORT_HASH, config_hash
from bench.records import read_record, record_path
from bench.store import TMP_PREFIX, atomic_write_json


@dataclass
class Migration:
    """What `plan` found in one output folder."""

    folder: Path
    moves: list[tuple[Path, Path, dict[str, Any]]] = field(default_factory=list)  # old file, new file, new record
    current: int = 0
    left: list[str] = field(default_factory=list)  # one line per record left as it is


def identity_fields(record: dict[str, Any]) -> dict[str, Any] | None:
    """The fields a record's config hash was made of, with `root` (the old kind); None where the
    record cannot say (a robustness or smoke run's settings are not kept in it)."""
    if "robustness" in record or "smoke" in record:
        return None
    keys = ("dataset", "root", "fraction", "method", "preset", "config")
    if not all(k in record for k in keys) or not isinstance(record["config"], dict):
        return None
    return {k: record[k] for k in keys}


def run_id(fields: dict[str, Any], seed: int, cfg_hash: str) -> str:
    return f"{fields['dataset']}-f{fields['fraction']:g}-{fields['method']}-s{seed}-{cfg_hash[:SHORT_HASH]}"


def plan(folder: str | Path, roots: dict[str, str] | None = None) -> Migration:
    """Every record of `folder`/records: already current, to move (old path, new path, new record),
    or left as it is. A data folder that cannot be read fails here, before anything is written."""
    out = Migration(Path(folder))
    records = out.folder / "records"
    if not records.is_dir():
        raise BenchError(f"{out.folder}: no records/ folder there (migrate takes an output folder)")
    for path in sorted(records.glob("*.json")):
        if path.name.startswith(TMP_PREFIX):
            continue
        record = read_record(path)
        if record is None:
            out.left.append(f"{path.name}: unreadable")
            continue
        if isinstance(record.get("data"), str) and record.get("run_id") == path.stem:
            out.current += 1  # written since ids hold the fingerprint (which it names)
            continue
        prov: dict[str, Any] = record["provenance"] if isinstance(record.get("provenance"), dict) else {}
        carried = prov.get("config_hash")
        fields = identity_fields(record)
        if fields is None or not isinstance(carried, str) or not isinstance(record.get("seed"), int):
            out.left.append(f"{path.name}: its id cannot be rebuilt from its fields")
            continue
        new_fields = {k: v for k, v in fields.items() if k != "root"}
        if fields["method"] in registry.names():  # fields added since at their old value are no identity
            new_fields["config"] = identity_of(registry.get(fields["method"]).Config, fields["config"])
        old_hashes = {config_hash(fields), config_hash({**fields, "config": new_fields["config"]})}
        if carried not in old_hashes or record.get("run_id") != path.stem \
                or path.stem != run_id(fields, record["seed"], carried):
            out.left.append(f"{path.name}: its config hash does not follow from its fields")
            continue
        root = (roots or {}).get(fields["dataset"], fields["root"])
        try:
            data = fingerprint(fields["dataset"], root)
        except BenchError as exc:
            raise ConfigError(path, "root", f"{exc}; pass --root {fields['dataset']}=PATH (where its data "
                                            "is now)") from None
        new_hash = config_hash({**new_fields, **data_identity(fields["dataset"], data)})
        new_id = run_id(fields, record["seed"], new_hash)
        new_record = {**record, "run_id": new_id, "data": data,
                      "provenance": {**prov, "config_hash": new_hash, "previous_run_id": path.stem}}
        out.moves.append((path, record_path(out.folder, new_id), new_record))
    return out


def apply(migration: Migration) -> tuple[int, list[str]]:
    """Write every new record, check them, then remove the old ones and rename their predictions.
    Returns (records moved, lines about records left as they are)."""
    left = list(migration.left)
    done: list[tuple[Path, Path]] = []
    for old, new, record in migration.moves:
        existing = read_record(new)
        if existing is not None and existing != record:
            left.append(f"{old.name}: {new.name} exists already with other results; both kept")
            continue
        if existing is None:
            atomic_write_json(new, record)
        done.append((old, new))
    for old, new in done:  # every new record is complete before any old one goes
        back = read_record(new)
        if back is None or back.get("run_id") != new.stem:
            raise BenchError(f"{new}: reads back wrong after writing; the old records are all kept")
    for old, new in done:
        old.unlink(missing_ok=True)
        before, after = (migration.folder / "predictions" / p.stem for p in (old, new))
        if before.is_dir() and not after.exists():
            before.rename(after)
    return len(done), left


def migrate(folder: str | Path, roots: dict[str, str] | None = None, dry_run: bool = False) -> int:
    """`bench records migrate FOLDER`: the lines it prints, and 0."""
    migration = plan(folder, roots)
    if dry_run:
        for old, new, _ in migration.moves:
            print(f"would move {old.name} -> {new.name}")
        moved, left = 0, migration.left
    else:
        moved, left = apply(migration)
    for line in left:
        print(f"bench: left as it is: {line}", file=sys.stderr)
    verb = "would migrate" if dry_run else "migrated"
    print(f"bench: {verb} {len(migration.moves) if dry_run else moved} record(s) in {migration.folder / 'records'} "
          f"to content-fingerprint ids; {migration.current} already current, {len(left)} left as they are")
    return 0
