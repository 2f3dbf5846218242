"""Crash-safe files: atomic writes and cross-process locks.

Every artefact and record is written to a temporary file in the same folder, flushed to disk and
then renamed over its final name, so a reader (or a rerun after `kill -9`) sees either nothing or
the complete file, never a torn one. Locks keep two workers (local or Slurm) from building the
same pre-trained artefact twice, or doing the same run twice.

A temporary's name carries its writer, `.tmp-<pid>@<host>~<random>`, so clean-up removes only what
is provably abandoned: written on this host by a process that no longer exists, or (written
elsewhere, or by an older bench) untouched for `STALE_TEMPORARY_AGE_S`. Two `bench run` processes
(or a local run beside Slurm jobs) can share one output folder without deleting each other's
in-flight files.

Torch files (artefacts, resume checkpoints) hold only tensors, dicts, lists, numbers and strings,
and are loaded with `weights_only=True`: a pickle planted in a shared results folder is refused,
never executed.
"""
from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

import torch

from bench.jsonfile import dumps

T = TypeVar("T")
log = logging.getLogger("bench")
TMP_PREFIX = ".tmp-"
OWNER_END = "~"                       # ends the `<pid>@<host>` part of a temporary's name
HOST_CHARS = 64                       # a host name is cut to this many characters in the name
STALE_TEMPORARY_AGE_S = 24 * 3600.0   # a temporary whose owner cannot be checked is abandoned after this


def _host() -> str:
    return socket.gethostname()[:HOST_CHARS]


def temporary_prefix() -> str:
    """The name prefix of this process's temporaries: `.tmp-<pid>@<host>~`."""
    return f"{TMP_PREFIX}{os.getpid()}@{_host()}{OWNER_END}"


def temporary_owner(name: str) -> tuple[int, str] | None:
    """(pid, host) of the process that wrote the temporary `name`, or None if it does not say."""
    owner, sep, _ = name[len(TMP_PREFIX):].partition(OWNER_END)
    pid, at, host = owner.partition("@")
    if not (name.startswith(TMP_PREFIX) and sep and at and pid.isdigit()):
        return None
    return int(pid), host


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def is_abandoned(path: Path, max_age_s: float = STALE_TEMPORARY_AGE_S) -> bool:
    """True when no live writer can still own the temporary `path` (see the module docstring)."""
    owner = temporary_owner(path.name)
    if owner is not None and owner[1] == _host() and not _alive(owner[0]):
        return True
    try:
        return time.time() - path.stat().st_mtime > max_age_s
    except FileNotFoundError:
        return False


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
    fd, tmp = tempfile.mkstemp(prefix=temporary_prefix(), dir=path.parent)
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
    """Strict JSON (bench.jsonfile.dumps: a non-finite float is written as null)."""
    _atomic(Path(path), lambda h: h.write(dumps(obj)), "w")


def atomic_torch_save(path: str | Path, obj: Any) -> None:
    _atomic(Path(path), lambda h: torch.save(obj, h), "wb")


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    _atomic(Path(path), lambda h: h.write(data), "wb")


@contextlib.contextmanager
def file_lock(path: str | Path) -> Iterator[None]:
    """An exclusive advisory lock (flock), released by the OS when the holder dies."""
    with try_lock(path, wait=True):
        yield


@contextlib.contextmanager
def try_lock(path: str | Path, wait: bool) -> Iterator[bool]:
    """Hold the flock on `path` for the block; yields False (holding nothing) if another process
    has it and `wait` is False."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def load_torch(path: str | Path) -> Any:
    """torch.load with `weights_only=True`; a file that is not plain tensors and containers (a
    planted pickle, a torn or foreign file) is a DataError naming it, never executed."""
    from bench.errors import DataError

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for unsafe or corrupt files
        text = str(exc).strip()
        if "Weights only load failed" in text:
            why = "it holds Python objects, not only tensors, dicts, lists, numbers and strings"
        else:
            why = f"{type(exc).__name__}: {text.splitlines()[0][:200] if text else 'unreadable'}"
        raise DataError(path, f"refusing to load this torch file ({why}); delete it to rebuild") from None


def cached_torch(path: str | Path, build: Callable[[], T]) -> T:
    """Load `path` if it exists, else build it once (under a lock) and save it atomically."""
    path = Path(path)
    if path.exists():
        log.debug("loading %s", path)
        return load_torch(path)
    with file_lock(path.with_name(path.name + ".lock")):
        if path.exists():  # another process built it while we waited for the lock
            log.debug("loading %s (built by another process)", path)
            return load_torch(path)
        log.debug("building %s", path)
        obj = build()
        atomic_torch_save(path, obj)
        return obj


def remove_stale_temporaries(folder: str | Path, max_age_s: float = STALE_TEMPORARY_AGE_S) -> int:
    """Delete the temporaries no live writer owns (`is_abandoned`); they are never a finished
    result. Another process's in-flight temporaries are left alone."""
    count = 0
    for tmp in Path(folder).rglob(TMP_PREFIX + "*"):
        if not is_abandoned(tmp, max_age_s):
            continue
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
