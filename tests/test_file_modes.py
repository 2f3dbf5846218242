"""Every file bench writes gets the process umask's mode (0644 under 022), never mkstemp's 0600:
a labmate sharing the results folder must be able to read the sweep."""
from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Iterator

import pytest
import torch

from bench.cli import main
from bench.store import atomic_torch_save, atomic_write_bytes, atomic_write_json, current_umask, file_lock
from tests.conftest import write_sweep

UMASKS = [0o022, 0o027]


@pytest.fixture(params=UMASKS, ids=["umask022", "umask027"])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    before = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(before)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_current_umask_reads_without_changing(umask: int) -> None:
    assert current_umask() == umask
    assert current_umask() == umask


def test_atomic_writers_and_locks_follow_the_umask(tmp_path: Path, umask: int) -> None:
    atomic_write_json(tmp_path / "r.json", {"a": 1})
    atomic_torch_save(tmp_path / "a.pt", {"w": torch.zeros(2)})
    atomic_write_bytes(tmp_path / "sub" / "b.png", b"x")
    with file_lock(tmp_path / "a.pt.lock"):
        pass
    for name in ("r.json", "a.pt", "sub/b.png", "a.pt.lock"):
        assert _mode(tmp_path / name) == 0o666 & ~umask, name
    assert _mode(tmp_path / "sub") == 0o777 & ~umask


def test_snapshot_folder_follows_the_umask(tmp_path: Path, umask: int) -> None:
    from bench.executors.snapshot import make_snapshot

    snap = make_snapshot(tmp_path)
    assert _mode(snap) == 0o777 & ~umask
    files = [p for p in snap.rglob("*.py") if ".git" not in p.parts][:20]
    assert files and all(_mode(p) & umask == 0 and _mode(p) & 0o444 == 0o444 & ~umask for p in files)


def test_synthetic_cache_folder_follows_the_umask(tmp_path: Path, umask: int) -> None:
    from bench.data.synthetic import ensure_synthetic_glands
    from bench.data.synthetic_config import SyntheticGlandsConfig

    folder = ensure_synthetic_glands(SyntheticGlandsConfig(n_train=2, n_test=1), tmp_path)
    assert _mode(folder) == 0o777 & ~umask
    assert all(_mode(p) == 0o666 & ~umask for p in folder.iterdir())


@pytest.mark.slow
def test_a_whole_results_folder_is_readable_by_the_group(tmp_path: Path, umask: int,
                                                         capsys: pytest.CaptureFixture) -> None:
    """A real tiny run, its table, the report: records, predictions, report.html, trivial cache."""
    config = write_sweep(tmp_path, 'seeds = [0]\nmethods = ["unet"]\noutput = "out"\n'
                                   '[[datasets]]\nname = "synthetic-glands"\nlabel_fractions = [1.0]\n')
    assert main(["run", "--config", str(config), "--quiet"]) == 0
    assert main(["report", "--config", str(config)]) == 0
    capsys.readouterr()
    out = tmp_path / "out"
    files = [p for p in out.rglob("*") if p.is_file()]
    kinds = {p.relative_to(out).parts[0] for p in files}
    assert {"records", "predictions", "report.html"} <= kinds
    wrong = {str(p.relative_to(out)): oct(_mode(p)) for p in files if _mode(p) != 0o666 & ~umask}
    assert not wrong
    folders = [p for p in out.rglob("*") if p.is_dir()]
    assert all(_mode(p) == 0o777 & ~umask for p in folders)
