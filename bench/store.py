"""Crash-safe files: atomic writes and cross-process locks.

Every artefact and record is written to a temporary file in the same folder, flushed to disk and
then renamed over its final name, so a reader (or a rerun after `kill -9`) sees either nothing or
the complete file, never a torn one. Locks keep two workers (local or Slurm) from building the
same pre-trained artefact twice.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

import torch

T = TypeVar("T")
TMP_PREFIX = ".tmp-"


def current_umask() -> int:
    """The process umask, read without changing it where Linux allows (/proc), else set and reset."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def public_mode(fd_or_path: int | str | Path, folder: bool = False) -> None:
    """Give a file made by mkstemp/mkdtemp (0600/0700) the mode open()/mkdir() would: 0666/0777 & ~umask."""
    mode = (0o777 if folder else 0o666) & ~current_umask()
    if isinstance(fd_or_path, int):
        os.fchmod(fd_or_path, mode)
    else:
        os.chmod(fd_or_path, mode)


def _atomic(path: Path, write: Callable[[Any], None], mode: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, dir=path.parent)
    try:
        public_mode(fd)  # a labmate sharing the results folder can read it, as with any file
        with os.fdopen(fd, mode) as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_write_json(path: str | Path, obj: Any) -> None:
    _atomic(Path(path), lambda h: h.write(json.dumps(obj, indent=1, sort_keys=True)), "w")


def atomic_torch_save(path: str | Path, obj: Any) -> None:
    _atomic(Path(path), lambda h: torch.save(obj, h), "wb")


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    _atomic(Path(path), lambda h: h.write(data), "wb")


@contextlib.contextmanager
def file_lock(path: str | Path) -> Iterator[None]:
    """An exclusive advisory lock (flock), released by the OS when the holder dies."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def cached_torch(path: str | Path, build: Callable[[], T]) -> T:
    """Load `path` if it exists, else build it once (under a lock) and save it atomically."""
    path = Path(path)
    if path.exists():
        return torch.load(path, map_location="cpu", weights_only=False)
    with file_lock(path.with_name(path.name + ".lock")):
        if path.exists():
            return torch.load(path, map_location="cpu", weights_only=False)
        obj = build()
        atomic_torch_save(path, obj)
        return obj


def remove_stale_temporaries(folder: str | Path) -> int:
    """Delete temporaries left by a killed writer; they are never a finished result."""
    count = 0
    for tmp in Path(folder).rglob(TMP_PREFIX + "*"):
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
            count += 1
    return count


def check_writable(folder: str | Path, key: str, source: str) -> None:
    """Fail early if `folder` cannot be created or written, without creating anything."""
    from bench.errors import ConfigError

    folder = Path(folder)
    probe = folder
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(source, key, f"cannot create {folder}: {probe} is not a folder")
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as exc:
        raise ConfigError(source, key, f"cannot write to {folder}: {exc.strerror}") from None
