"""One line for every user error on every command; broken pipes end quietly; a broken third-party
plugin costs only its own methods."""
from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

import bench
from bench import registry
from bench.cli import main
from tests.conftest import REPO, TINY_SWEEP, write_sweep
from tests.test_table import SWEEP, _write_records


def _one_error_line(err: str, *expected: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bench: error: "), err
    for text in expected:
        assert text in lines[0], lines[0]


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), extra.pop("PYTHONPATH", "")]),
            "OMP_NUM_THREADS": "1", **extra}


def _closed_pipe(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    """Run bench with a stdout whose reader has already gone (what `| head -1` ends in)."""
    read, write = os.pipe()
    os.close(read)
    try:
        return subprocess.run([sys.executable, "-m", "bench", *args], stdout=write, stderr=subprocess.PIPE,
                              text=True, cwd=cwd, env=_env(**env), timeout=300)
    finally:
        os.close(write)


@pytest.mark.slow
def test_broken_pipe_and_a_broken_plugin_in_a_real_process(tmp_path: Path) -> None:
    """`bench list --json | head -1` with an installed distribution (dist-info on the path) whose
    entry point cannot import: one warning line naming it, the list, a quiet exit 0."""
    site = tmp_path / "site"
    info = site / "broken_plugin-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[bench.plugins]\nshiny = shiny_method_not_installed:Shiny\n")
    proc = _closed_pipe(["list", "--json"], tmp_path, PYTHONPATH=str(site))
    assert proc.returncode == 0
    warning = proc.stderr.strip().splitlines()
    assert len(warning) == 1 and warning[0].startswith("bench: warning: plugin entry point 'shiny'"), proc.stderr
    assert "shiny_method_not_installed:Shiny" in warning[0] and "ModuleNotFoundError" in warning[0]


class _GoneReader:
    """A stdout whose reader has left: every write and flush raises like a closed pipe."""

    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")

    def flush(self) -> None:
        raise BrokenPipeError(32, "Broken pipe")


def test_broken_pipe_of_table_exits_quietly(tmp_path: Path, capsys, monkeypatch) -> None:
    config = write_sweep(tmp_path, SWEEP)
    _write_records(tmp_path / "out", {}, 0.8)
    monkeypatch.setattr(sys, "stdout", _GoneReader())
    assert main(["table", "--config", str(config), "--format", "csv"]) == 0
    assert capsys.readouterr().err == ""


def test_a_sweep_naming_the_broken_plugin_fails_with_its_error(tmp_path: Path, capsys, monkeypatch) -> None:
    ep = EntryPoint(name="shiny", value="shiny_method_not_installed:Shiny", group=registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr(registry, "_discovered", False)
    monkeypatch.setattr(registry, "_BROKEN", {})
    monkeypatch.setattr(registry, "entry_points", lambda group: [ep])
    config = write_sweep(tmp_path, TINY_SWEEP.replace('"unet"', '"shiny"'))
    assert main(["run", "--config", str(config), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("bench: warning: plugin entry point 'shiny'")
    _one_error_line("\n".join(err[1:]), "methods[1]: unknown method 'shiny'", "ModuleNotFoundError")
    assert not (tmp_path / "results").exists()


def test_set_errors_name_the_set_flag_not_the_file(tmp_path: Path, capsys) -> None:
    config = write_sweep(tmp_path, TINY_SWEEP)
    for item, key in [("preset=papr", "preset"), ("seeds=[0,-1]", "seeds"),
                      ("datasets.0.label_fractions=[2.0]", "datasets[0].label_fractions"),
                      ("params.unet.max_epochs=many", "params.unet.max_epochs")]:
        assert main(["table", "--config", str(config), "--set", item]) == 2
        err = capsys.readouterr().err
        _one_error_line(err, f"--set {item}: {key}:")
        assert str(config) not in err
    assert main(["table", "--config", str(config), "--set", "preset=tiny", "--set", "executor=nowhere"]) == 2
    _one_error_line(capsys.readouterr().err, "--set executor=nowhere: executor:")


def test_version(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out.strip() == f"bench {bench.__version__}"


def test_experiment_without_a_name_says_what_it_expects(capsys) -> None:
    assert main(["experiment"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    _one_error_line(err, "expected the NAME of an experiment", "table1", "--list")


@pytest.mark.parametrize("argv", [["table", "--format", "xml"], ["frobnicate"], [], ["run", "--executr", "x"]])
def test_usage_errors_are_one_line_with_status_2(argv: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    _one_error_line(capsys.readouterr().err, "--help")


def test_an_unwritable_output_given_by_set_names_the_set(tmp_path: Path, capsys) -> None:
    """Found after loading (when the sweep is about to write), still named as the --set it came from."""
    (tmp_path / "blocker").write_text("a file, not a folder")
    config = write_sweep(tmp_path, TINY_SWEEP)
    assert main(["run", "--config", str(config), "--quiet", "--set", 'output="blocker/results"']) == 2
    _one_error_line(capsys.readouterr().err, '--set output="blocker/results": output: cannot create')
