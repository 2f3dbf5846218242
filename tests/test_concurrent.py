"""Two `bench run` processes on one output folder: every run done once, nothing of the other deleted."""
from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from bench.cli import main
from bench.config import load_config
from bench.records import claim_path
from bench.runner import expand
from bench.store import TMP_PREFIX, is_abandoned, remove_stale_temporaries, temporary_owner, temporary_prefix, try_lock
from tests.conftest import sweep_toml, write_sweep

SWEEP = sweep_toml(["ddpm", "unet"], seeds=(0, 1), fractions=(0.1,), params={
    "ddpm": {"train_steps": 6, "probe_max_epochs": 2, "max_side": 96},
    "unet": {"max_side": 96, "max_epochs": 2}})
DONE = re.compile(r"^bench: (\S+): done in ", re.M)


def _bench(config: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "bench", "run", "--config", str(config), "--no-progress",
                             *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def test_a_claimed_run_is_skipped_not_redone(tmp_path: Path) -> None:
    """While another holder has a run's lock, execute(wait=False) leaves the run alone."""
    spec = expand(load_config(write_sweep(tmp_path, SWEEP), []))[0]
    with try_lock(claim_path(spec.output, spec.run_id), wait=True) as held:
        assert held
        with try_lock(claim_path(spec.output, spec.run_id), wait=False) as second:
            assert not second
        assert spec.execute(wait=False) is None
    assert not spec.record_path.exists()


@pytest.mark.slow
def test_two_processes_share_one_output(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A sweep (seeds 0-1) and an overlapping one (seeds 1-2) at once on one folder."""
    config = write_sweep(tmp_path, SWEEP)
    start = time.perf_counter()
    procs = [_bench(config), _bench(config, "--set", "seeds=[1, 2]")]
    outs = [p.communicate(timeout=300) for p in procs]
    wall = time.perf_counter() - start
    for proc, (_, err) in zip(procs, outs):
        assert proc.returncode == 0, err
    done = Counter(run_id for _, err in outs for run_id in DONE.findall(err))
    records = {json.loads(p.read_text())["run_id"] for p in (tmp_path / "results" / "records").glob("*.json")}
    assert len(records) == 6  # seeds 0..2 x {ddpm, unet}
    assert set(done) == records and set(done.values()) == {1}, done  # each run executed exactly once
    artefacts = list((tmp_path / "results" / "artefacts").rglob("*.pt"))
    assert len(artefacts) == 1  # one ddpm backbone, built once, shared
    assert sum(err.count("ddpm pretrain: done") for _, err in outs) == 1
    assert not list((tmp_path / "results").rglob(TMP_PREFIX + "*"))
    for out, _ in outs:  # each sweep's table, printed when it finished, has both cells
        assert re.search(r"\| ddpm \|", out) and re.search(r"\| unet \|", out), out
    for seeds in ("[0, 1]", "[1, 2]"):  # and is complete: n = 2 seeds per cell
        capsys.readouterr()
        assert main(["table", "--config", str(config), "--format", "csv", "--set", f"seeds={seeds}"]) == 0
        table = pd.read_csv(io.StringIO(capsys.readouterr().out))
        runs = table[table["method"] != "trivial"]  # the reference row is no run
        assert sorted(runs["method"]) == ["ddpm", "unet"] and list(runs["n"]) == [2, 2], table
    print(f"two concurrent bench run processes: {wall:.1f} s")


def test_only_abandoned_temporaries_are_removed(tmp_path: Path) -> None:
    mine = tmp_path / f"{temporary_prefix()}abc"
    mine.write_text("")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = temporary_owner(mine.name)[1]
    gone = tmp_path / f"{TMP_PREFIX}{dead.pid}@{host}~xyz"
    gone.write_text("")
    elsewhere = tmp_path / f"{TMP_PREFIX}1@another-node~xyz"
    elsewhere.write_text("")
    legacy = tmp_path / f"{TMP_PREFIX}q1w2e3"  # an older bench's name, no owner
    legacy.write_text("")
    old = tmp_path / f"{TMP_PREFIX}2@another-node~old"
    old.write_text("")
    os.utime(old, (time.time() - 2 * 86400, time.time() - 2 * 86400))
    assert temporary_owner(mine.name) == (os.getpid(), host)
    assert not is_abandoned(mine) and is_abandoned(gone) and not is_abandoned(elsewhere)
    assert remove_stale_temporaries(tmp_path) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([mine.name, elsewhere.name, legacy.name])
