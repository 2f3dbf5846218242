"""A third-party plugin whose import raises anything (sys.exit() included) costs only its own
methods: every command warns once, naming its entry point, and works; only Ctrl-C stops bench."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from bench import registry
from bench.cli import main
from tests.conftest import make_sweep


class _EntryPoint:
    """An installed entry point whose module raises `error` on import."""

    def __init__(self, name: str, error: BaseException) -> None:
        self.name, self.value, self.error = name, f"{name}_plugin:Method", error

    def load(self) -> None:
        raise self.error


@pytest.fixture
def broken(monkeypatch: pytest.MonkeyPatch) -> list[_EntryPoint]:
    """Three broken entry points: sys.exit() with a message, a bare sys.exit(3), a ValueError."""
    eps = [_EntryPoint("quits", SystemExit("plugin says goodbye")), _EntryPoint("exits", SystemExit(3)),
           _EntryPoint("raises", ValueError("bad plugin"))]
    monkeypatch.setattr(registry, "_discovered", False)
    monkeypatch.setattr(registry, "_BROKEN", {})
    monkeypatch.setattr(registry, "entry_points", lambda group: eps if group == registry.ENTRY_POINT_GROUP else [])
    return eps


def _warnings(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("bench: warning: plugin entry point")]


COMMANDS = [["list"], ["list", "--json"], ["experiment", "--list"], ["status"], ["table", "--all"],
            ["run", "--dry-run"], ["report"]]


@pytest.mark.parametrize("argv", COMMANDS, ids=[" ".join(c) for c in COMMANDS])
def test_every_command_warns_once_and_works(tmp_path: Path, capsys: pytest.CaptureFixture, broken,
                                            argv: list[str]) -> None:
    config = make_sweep(tmp_path, ["unet"])
    (tmp_path / "results").mkdir()
    extra = ["--config", str(config)] if argv[0] not in ("list",) and argv != ["experiment", "--list"] else []
    code = main([*argv, *extra])
    err = capsys.readouterr().err
    warnings = _warnings(err)
    assert [w.split("'")[1] for w in warnings] == ["quits", "exits", "raises"], err
    assert "SystemExit: plugin says goodbye" in warnings[0] and "SystemExit: 3" in warnings[1]
    assert "ValueError: bad plugin" in warnings[2]
    assert code == (1 if argv[0] == "table" else 0), err  # table: no records yet (exit 1, one line)


def test_a_sweep_naming_a_plugin_that_exited_names_why(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                      broken) -> None:
    config = make_sweep(tmp_path, ["quits"])
    assert main(["run", "--config", str(config), "--dry-run"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(_warnings("\n".join(err))) == 3 and len(err) == 4, err
    assert err[-1].startswith("bench: error: ") and "unknown method 'quits'" in err[-1]
    assert "SystemExit: plugin says goodbye" in err[-1]


def test_ctrl_c_while_a_plugin_imports_stops_bench(monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture) -> None:
    eps = [_EntryPoint("slow", KeyboardInterrupt())]
    monkeypatch.setattr(registry, "_discovered", False)
    monkeypatch.setattr(registry, "_BROKEN", {})
    monkeypatch.setattr(registry, "entry_points", lambda group: eps)
    assert main(["list"]) == 130
    assert "interrupted" in capsys.readouterr().err
    assert sys.exc_info() == (None, None, None)
