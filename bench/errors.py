"""Errors a user can act on.

Every user-facing failure (bad config, bad data, unknown plugin, unwritable output) is a
`BenchError`; the CLI prints its message as one line and exits with status 2. Messages name the
file and the field so the user knows exactly what to fix.
"""
from __future__ import annotations

from pathlib import Path


class BenchError(Exception):
    """A problem with the user's input, reported as one line without a traceback."""


class ConfigError(BenchError):
    """bench.toml (or a --set override) is invalid."""

    def __init__(self, path: str | Path, key: str, message: str) -> None:
        self.path, self.key, self.message = str(path), key, message
        super().__init__(f"{path}: {key}: {message}")


class DataError(BenchError):
    """A data file is missing, unreadable or inconsistent with its partner."""

    def __init__(self, path: str | Path, message: str) -> None:
        self.path = str(path)
        super().__init__(f"{path}: {message}")


class FieldError(BenchError, ValueError):
    """A plugin's Config rejects one of its own fields (raised in its `__post_init__`).

    The Config knows neither the plugin's name nor where the value came from, so it names only
    the field; the config loader re-raises this as a ConfigError naming the sweep file (or
    `--set`) and `params.METHOD.FIELD`.
    """

    def __init__(self, field: str, message: str) -> None:
        self.field, self.message = field, message
        super().__init__(f"{field}: {message}")


def one_line(exc: BaseException) -> str:
    """`Type: message` on one line, the message cut at 200 characters (for a table or a log)."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:200]}"
