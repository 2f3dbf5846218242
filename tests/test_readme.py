"""Every README code block that defines a plugin, as pasted: it passes ruff and mypy with the
project's settings, registers, keeps the plugin contract, and its tiny preset runs one cell
(one seed of one data set and fraction) through the runner, record and all."""
from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from bench import registry
from bench.config import load_config
from bench.contract import check_plugin
from bench.records import read_record
from bench.runner import RunSpec
from tests.conftest import REPO, make_sweep

FENCE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
REGISTERED = re.compile(r'@register\("(\w+)", "(\w+)"\)')


def plugin_blocks() -> dict[str, str]:
    """Plugin name -> the code block of README.md that registers it."""
    blocks = [m.group(1) for m in FENCE.finditer((REPO / "README.md").read_text())]
    return {REGISTERED.search(code).group(1): code for code in blocks if REGISTERED.search(code)}  # type: ignore[union-attr]


BLOCKS = plugin_blocks()


def test_the_readme_shows_an_ssl_and_a_supervised_plugin() -> None:
    kinds = {REGISTERED.search(code).group(2) for code in BLOCKS.values()}  # type: ignore[union-attr]
    assert kinds == set(registry.KINDS), BLOCKS.keys()


@pytest.fixture
def pasted(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The block of plugin `name` as a module file, imported into a copy of the registry that is
    dropped afterwards."""
    name = request.getfixturevalue("name")
    registry.discover()
    monkeypatch.setattr(registry, "_PLUGINS", dict(registry._PLUGINS))
    path = tmp_path / f"readme_{name}.py"
    path.write_text(BLOCKS[name])
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
    yield path


def _gate(args: list[str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MYPYPATH": str(REPO)}  # this checkout's bench, not an installed one
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)


@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_readme_plugin_passes_ruff_and_registers_and_keeps_the_contract(name: str, pasted: Path,
                                                                       tmp_path: Path) -> None:
    done = _gate(["ruff", "check", "--no-cache", "--config", str(REPO / "pyproject.toml"), str(pasted)])
    assert done.returncode == 0, done.stdout + done.stderr
    check_plugin(registry.get(name))
    assert load_config(make_sweep(tmp_path, [name])).methods == (name,)  # "plus its name in methods"


@pytest.mark.slow  # 2 s after the mypy gate (CI), 17 s of CPU from a fresh clone's cold cache
def test_readme_plugins_pass_mypy(tmp_path: Path) -> None:
    """All blocks in one mypy run, with the gate's settings and its cache (CI runs the gate first)."""
    paths = []
    for name, code in BLOCKS.items():
        paths.append(tmp_path / f"readme_{name}.py")
        paths[-1].write_text(code)
    done = _gate(["mypy", "--config-file", str(REPO / "pyproject.toml"), *map(str, paths)])
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_readme_plugin_runs_a_tiny_cell(name: str, pasted: Path, tmp_path: Path, one_thread: None) -> None:
    spec = RunSpec(dataset="synthetic-glands", root=None, fraction=1.0, method=name, seed=0, preset="tiny",
                   output=str(tmp_path / "results"))
    record = read_record(spec.execute())
    assert record is not None and record["method"] == name and record["kind"] == registry.get(name).kind
    assert 0.0 <= record["metrics"]["dice"] <= 1.0 and record["n_test"] > 0
