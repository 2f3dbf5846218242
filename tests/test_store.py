"""Atomic writes, locks and records: what makes kill -9 safe."""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import time
from pathlib import Path

import pytest

from bench.errors import ConfigError
from bench.records import is_done, load_records
from bench.store import atomic_write_json, cached_torch, check_writable, remove_stale_temporaries


def _writer(path: str) -> None:
    big = {"metrics": {"dice": 0.5}, "payload": "x" * 5_000_000}
    while True:
        atomic_write_json(path, big)


def test_a_killed_writer_never_leaves_a_torn_file(tmp_path: Path) -> None:
    path = tmp_path / "records" / "run.json"
    for _ in range(5):
        proc = mp.get_context("fork").Process(target=_writer, args=(str(path),))
        proc.start()
        time.sleep(0.15)
        os.kill(proc.pid, signal.SIGKILL)
        proc.join()
        if path.exists():
            assert json.loads(path.read_text())["metrics"] == {"dice": 0.5}
    remove_stale_temporaries(tmp_path)
    assert [p.name for p in path.parent.iterdir()] == (["run.json"] if path.exists() else [])


def test_unreadable_records_count_as_not_done(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder = tmp_path / "records"
    folder.mkdir()
    (folder / "bad.json").write_text("{not json")
    atomic_write_json(folder / "good.json", {"metrics": {}, "run_id": "good", "dataset": "glas", "fraction": 1.0,
                                             "method": "unet", "seed": 0})
    assert not is_done(folder / "bad.json") and is_done(folder / "good.json")
    assert [r["run_id"] for r in load_records(tmp_path)] == ["good"]
    assert "bad.json" in capsys.readouterr().err


def test_cached_torch_builds_once(tmp_path: Path) -> None:
    calls = []

    def build() -> dict:
        calls.append(1)
        return {"w": 1}

    assert cached_torch(tmp_path / "a.pt", build) == {"w": 1}
    assert cached_torch(tmp_path / "a.pt", build) == {"w": 1}
    assert calls == [1]


def test_check_writable(tmp_path: Path) -> None:
    check_writable(tmp_path / "new" / "deeper", "output", "bench.toml")
    assert not (tmp_path / "new").exists()  # nothing created
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="output: cannot create"):
        check_writable(blocker / "sub", "output", "bench.toml")
