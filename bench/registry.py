"""The plugin registry: one decorator registers a method under a unique name and kind.

Built-in plugins are the modules of the `methods` and `baselines` packages (adding a method is
adding one file); third-party packages register through the entry-point group `bench.plugins`.
A third-party entry point that fails to import (any exception, `sys.exit()` included; only
Ctrl-C stops bench) costs only its own methods: every command warns once on stderr (one line
naming the entry point and the error), every other command works, and a sweep or command that
names a method of that entry point fails with that line (exit 2).
"""
from __future__ import annotations

import importlib
import pkgutil
import sys
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from bench.errors import BenchError, one_line

if TYPE_CHECKING:
    from bench.plugin import Plugin

KINDS = ("ssl", "supervised")
BUILTIN_PACKAGES = ("methods", "baselines")
ENTRY_POINT_GROUP = "bench.plugins"

_PLUGINS: dict[str, type["Plugin"]] = {}
_BROKEN: dict[str, str] = {}  # entry-point name -> why it failed to import
_discovered = False
P = TypeVar("P", bound="type[Plugin]")


class PluginError(BenchError, ValueError):
    """A plugin class that cannot be registered: one line naming the plugin and what is wrong."""


def register(name: str, kind: str, summary: str | None = None) -> Callable[[P], P]:
    """Class decorator: `@register("mdm", "ssl")`.

    The class is checked as it is defined (`Plugin.definition_problems`: the methods it must
    write, its Config and presets): a plugin that would fail later fails at its import, with
    one PluginError line naming it and every problem.
    """
    if kind not in KINDS:
        raise ValueError(f"plugin {name!r}: kind must be one of {KINDS}, got {kind!r}")

    def wrap(cls: P) -> P:
        existing = _PLUGINS.get(name)
        if existing is not None and existing.__qualname__ != cls.__qualname__:
            raise ValueError(f"plugin name {name!r} is registered twice ({existing.__module__}, {cls.__module__})")
        where = f"plugin {name!r} ({cls.__module__}.{cls.__qualname__})"
        check = getattr(cls, "definition_problems", None)
        if check is None:
            raise PluginError(f"{where}: not a subclass of bench.ssl.SSLMethod or bench.supervised.SupervisedMethod")
        problems = list(check())
        if cls.kind and cls.kind != kind:
            problems.insert(0, f"registered as {kind!r} but its base class is a {cls.kind!r} method")
        if problems:
            raise PluginError(f"{where}: {'; '.join(problems)}")
        cls.name, cls.kind = name, kind
        doc = (cls.__doc__ or "").strip().splitlines()
        cls.summary = summary or (doc[0] if doc else "")
        _PLUGINS[name] = cls
        return cls

    return wrap


def discover() -> None:
    """Import the built-in plugin modules and the entry points once."""
    global _discovered
    if _discovered:
        return
    _discovered = True
    for package_name in BUILTIN_PACKAGES:
        package = importlib.import_module(package_name)
        for info in pkgutil.iter_modules(package.__path__):
            if not info.name.startswith("_"):
                importlib.import_module(f"{package_name}.{info.name}")
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            ep.load()
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # a third party's bug, missing dependency or sys.exit(), not bench's
            why = f"plugin entry point {ep.name!r} ({ep.value}) failed to import: {type(exc).__name__}: {exc}"
            _BROKEN[ep.name] = " ".join(why.split())
            print(f"bench: warning: {_BROKEN[ep.name]}; its methods are unavailable", file=sys.stderr)


def broken_hint(name: str) -> str:
    """Why `name` may be missing: the failed entry point of that name, else every failed one."""
    discover()
    if name in _BROKEN:
        return f"; {_BROKEN[name]}"
    return "".join(f"; {why}" for why in _BROKEN.values())


def names() -> list[str]:
    discover()
    return sorted(_PLUGINS)


def get(name: str) -> type["Plugin"]:
    discover()
    if name not in _PLUGINS:
        raise BenchError(f"unknown method {name!r}; known: {', '.join(sorted(_PLUGINS))}{broken_hint(name)}")
    return _PLUGINS[name]


def create(name: str, preset: str, params: dict[str, Any] | None = None) -> "Plugin":
    """The plugin `name` built from its `preset` with `[params.NAME]` overrides applied."""
    cls = get(name)
    return cls(cls.resolve_config(preset, params))


def describe() -> list[dict]:
    """What `bench list --json` prints: one object per plugin. A plugin whose `paper` model cannot
    be built is listed with `params` None and `error`, its one line; the others are unaffected."""
    rows = []
    for n in names():
        cls = get(n)
        row: dict[str, Any] = {"name": n, "kind": cls.kind, "summary": cls.summary}
        try:
            row["params"] = cls.param_count()
        except Exception as exc:  # the plugin's bug: say so on its own line, list the rest
            row.update(params=None, error=one_line(exc))
        rows.append(row)
    return rows
