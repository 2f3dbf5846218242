"""A data set's identity by content: the names, sizes and SHA-256 digests of its files.

A run's id holds this fingerprint, not the folder the data lies in (bench.runner.RunSpec), so the
same files at another path (a copy, a cluster that mounts them elsewhere) share records and
artefacts, and a root whose files differ in one byte never does: its runs get other ids, and
neither set of records is mixed into the other's rows.

Every regular file under the root counts (hidden names, `.*`, do not), whether or not a loader
reads it: a fingerprint errs on the side of "different". Hashing the 125 MB of GlaS takes about a
second, so it is done once per file: each file's digest is cached with its size and mtime in
`$BENCH_CACHE/fingerprints/` (default `~/.cache/bench`), one file per root, and is recomputed only
where a size or an mtime changed. The cache lives in the user's cache, not beside the data (a
shared data folder is often read-only) nor beside an output folder (a fingerprint is asked for
where no output is known: a feature cache's key, a data set's working scale). A lost or unwritable
cache only costs the hashing again. Within a process the fingerprint of a root is computed once,
as its data is loaded once (bench.data.registry); `clear_cache` here forgets it.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.data.synthetic import cache_base
from bench.errors import DataError
from bench.store import atomic_write_json


@dataclass(frozen=True)
class FingerprintConfig:
    """Where the per-file digests are cached and how long a fingerprint is."""

    folder: str = "fingerprints"   # under $BENCH_CACHE
    version: int = 1               # bump when the recipe changes: every cached digest is recomputed
    digits: int = 16               # hex digits of a fingerprint (64 bits)
    chunk: int = 1 << 20           # bytes read at a time while hashing a file


CFG = FingerprintConfig()
_MEMO: dict[Path, str] = {}


def fingerprint(dataset: str, root: str | Path | None) -> str:
    """The content fingerprint of `dataset`'s files under `root`: 16 hex digits.

    A data set bench generates itself (synthetic-glands, no root needed) is the same wherever it
    is cached, so its fingerprint is `generated:<name>` whatever `root` says.
    """
    from bench.data.registry import dataset_info

    if not dataset_info(dataset).needs_root:
        return f"generated:{dataset}"
    if root is None:
        raise DataError(dataset, "this data set needs a root folder (where it was downloaded); none was given")
    return root_fingerprint(root)


def data_identity(dataset: str, data: str) -> dict[str, Any]:
    """What an id (a run's, a pre-trained artefact's, a feature cache's) holds of the data whose
    fingerprint is `data`: that fingerprint, for a downloaded set. A generated set keeps the
    `root: None` its ids always held (its files follow from bench's code, wherever they are cached)."""
    from bench.data.registry import dataset_info

    return {"data": data} if dataset_info(dataset).needs_root else {"root": None}


def root_fingerprint(root: str | Path, cfg: FingerprintConfig = CFG) -> str:
    """The fingerprint of every file under `root`, from the cached digests where the file is unchanged."""
    folder = Path(root).expanduser().resolve()
    if folder in _MEMO:
        return _MEMO[folder]
    if not folder.is_dir():
        raise DataError(folder, "no such data folder (its fingerprint names the run's data)")
    cache_path = cache_base() / cfg.folder / f"{hashlib.sha256(str(folder).encode()).hexdigest()[:16]}.json"
    cached = _read_cache(cache_path, folder, cfg)
    entries: dict[str, list[Any]] = {}
    for rel, path in _files(folder):
        try:
            st = path.stat()
            old = cached.get(rel)
            if isinstance(old, list) and len(old) == 3 and old[:2] == [st.st_size, st.st_mtime_ns]:
                entries[rel] = old
            else:
                entries[rel] = [st.st_size, st.st_mtime_ns, _digest(path, cfg.chunk)]
        except OSError as exc:
            raise DataError(path, f"cannot read it to fingerprint the data: {exc.strerror or exc}") from None
    if entries != cached:
        try:
            atomic_write_json(cache_path, {"version": cfg.version, "root": str(folder), "files": entries})
        except OSError:
            pass  # an unwritable cache costs the hashing again next time, nothing else
    digest = hashlib.sha256()
    for rel in sorted(entries):
        size, _, sha = entries[rel]
        digest.update(f"{rel}\0{size}\0{sha}\n".encode())
    _MEMO[folder] = out = digest.hexdigest()[: cfg.digits]
    return out


def clear_cache() -> None:
    """Forget this process's fingerprints (the on-disk digests are checked against mtimes anyway)."""
    _MEMO.clear()


def _files(folder: Path) -> list[tuple[str, Path]]:
    """(relative POSIX path, path) of every regular file under `folder`, hidden names skipped, sorted."""
    out, seen = [], set()
    for base, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(base)
        if real in seen:  # a symlink back up the tree: its files are counted once
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in files:
            path = Path(base) / name
            if not name.startswith(".") and path.is_file():
                out.append((path.relative_to(folder).as_posix(), path))
    return sorted(out)


def _digest(path: Path, chunk: int) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _read_cache(path: Path, folder: Path, cfg: FingerprintConfig) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    ok = isinstance(data, dict) and data.get("version") == cfg.version and data.get("root") == str(folder)
    files = data.get("files") if ok else None
    return files if isinstance(files, dict) else {}
