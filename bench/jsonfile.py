"""The JSON files bench writes and reads back: strict on the way out, bounded on the way in.

Written files are strict JSON (RFC 8259): a float that is not finite (a NaN loss, an undefined
score) is written as null, never as the `NaN` / `Infinity` tokens other readers refuse. A file
is read only if it is a regular file (a FIFO would block the reader, a device never end), no
larger than `MAX_BYTES` and nested no deeper than `MAX_DEPTH`; anything else is a
`JSONFileError` saying why, which a caller turns into one warning and skips.
"""
from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path
from typing import Any

MAX_BYTES = 64 * 2**20   # a record with per-image scores of thousands of images is a few MB
MAX_DEPTH = 64           # records nest about 5 deep


class JSONFileError(ValueError):
    """A file bench would read as JSON is not one it can trust (the message says why)."""


def strict(obj: Any) -> Any:
    """`obj` with every non-finite float replaced by None (dicts, lists and tuples walked)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict(v) for v in obj]
    return obj


def dumps(obj: Any) -> str:
    """Strict JSON text of `obj` (non-finite floats as null), keys sorted, one-space indent."""
    return json.dumps(strict(obj), indent=1, sort_keys=True, allow_nan=False)


def read_json(path: str | Path, max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH) -> Any:
    """The JSON value in `path`. FileNotFoundError if it is absent (or a folder above it is a file);
    JSONFileError if it is not a
    regular file, too large, unreadable, not UTF-8 JSON, or nested too deep. `NaN` / `Infinity`
    tokens (files of older versions) read as None."""
    try:
        info = os.stat(path)
    except NotADirectoryError:  # a file where a folder of the path should be: no such file either
        raise FileNotFoundError(2, "No such file or directory", str(path)) from None
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise JSONFileError(f"cannot read it: {exc.strerror or exc}") from None
    if not stat.S_ISREG(info.st_mode):
        raise JSONFileError("not a regular file")
    if info.st_size > max_bytes:
        raise JSONFileError(f"{info.st_size:,} bytes, more than the {max_bytes:,} a JSON file of bench may have")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # never blocks, should a FIFO replace the file
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise JSONFileError(f"cannot read it: {exc.strerror or exc}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise JSONFileError("not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as handle:
            data = handle.read(max_bytes + 1)
    except OSError as exc:
        raise JSONFileError(f"cannot read it: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise JSONFileError(f"more than the {max_bytes:,} bytes a JSON file of bench may have")
    try:
        value = json.loads(data.decode("utf-8"), parse_constant=lambda _name: None)
    except UnicodeDecodeError as exc:
        raise JSONFileError(f"not UTF-8 text (byte {exc.start})") from None
    except RecursionError:
        raise JSONFileError(f"nested deeper than {max_depth} levels") from None
    except ValueError as exc:
        raise JSONFileError(f"not valid JSON ({exc})") from None
    if _depth(value) > max_depth:
        raise JSONFileError(f"nested deeper than {max_depth} levels")
    return value


def _depth(value: Any) -> int:
    """How deep lists and objects nest in `value` (a scalar: 0), without recursion."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (dict, list)):
            deepest = max(deepest, depth + 1)
            stack.extend((child, depth + 1) for child in (node.values() if isinstance(node, dict) else node))
    return deepest
