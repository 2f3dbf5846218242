"""The output folder: whatever is in the way of an entry bench will create fails before any
training (one line naming it, exit 2, nothing written); spent checkpoints are removed once the
runs that could resume from them are done, and `bench status` lists any that are left."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from bench.cli import main
from bench.config import load_config
from bench.executors.status import leftover_checkpoints
from bench.runner import OUTPUT_FOLDERS, expand
from tests.conftest import REPO, make_sweep


def _tree(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def _spec(config: Path):  # the sweep's one run
    (spec,) = expand(load_config(config))
    return spec


def _in_the_way(tmp_path: Path, capsys: pytest.CaptureFixture, config: Path, thing: Path, make) -> None:
    make(thing)
    before = _tree(tmp_path)
    assert main(["run", "--config", str(config), "--quiet", "--dry-run"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"bench: error: {config}: output: "), lines
    assert str(thing) in lines[0] or any(str(p) in lines[0] for p in thing.parents), lines[0]
    assert _tree(tmp_path) == before  # nothing written, nothing trained


def _file(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("in the way")


def _folder(path: Path) -> None:
    path.mkdir(parents=True)


@pytest.mark.parametrize("entry", OUTPUT_FOLDERS)
def test_a_file_named_like_an_output_folder(tmp_path: Path, capsys: pytest.CaptureFixture, entry: str) -> None:
    config = make_sweep(tmp_path, ["ddpm"])
    _in_the_way(tmp_path, capsys, config, tmp_path / "results" / entry, _file)


@pytest.mark.parametrize("what", ["record", "lock", "predictions", "artefact", "artefact-folder", "checkpoint",
                                  "run-checkpoint"])
def test_something_else_where_a_run_writes(tmp_path: Path, capsys: pytest.CaptureFixture, what: str) -> None:
    config = make_sweep(tmp_path, ["ddpm"])
    spec = _spec(config)
    artefact = spec.artefacts()[0]
    thing, make = {"record": (spec.record_path, _folder),
                   "lock": (tmp_path / "results" / "locks" / f"{spec.run_id}.lock", _folder),
                   "predictions": (tmp_path / "results" / "predictions" / spec.run_id, _file),
                   "artefact": (artefact, _folder), "artefact-folder": (artefact.parent, _file),
                   "checkpoint": (spec.checkpoint_path(artefact).parent, _file),
                   "run-checkpoint": (tmp_path / "results" / "checkpoints" / "runs", _file)}[what]
    _in_the_way(tmp_path, capsys, config, thing, make)


def test_spent_checkpoints_are_removed_and_listed(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """What a kill between a stage's artefact and the run's record leaves (the stage's loop
    checkpoint, the run's own probe checkpoint) is listed by `bench status` and removed by the
    run that finishes; a checkpoint whose artefact is still missing is resumable and kept."""
    config = make_sweep(tmp_path, ["ddpm"])
    spec = _spec(config)
    artefact = spec.artefacts()[0]
    stage = spec.checkpoint_path(artefact).with_name(spec.checkpoint_path(artefact).stem + ".loop0.pt")
    own = tmp_path / "results" / "checkpoints" / "runs" / f"{spec.run_id}.probe.loop0.pt"
    for path in (stage, own):
        _file(path)
    found = dict(leftover_checkpoints(spec.output, [spec]))
    assert found[stage].startswith("resumable: pre-training of artefacts/ddpm/")
    assert found[own] == f"resumable: {spec.run_id} continues from it"
    assert spec.remove_spent_checkpoints() == [own]  # no artefact yet: the stage's state stays
    _file(artefact)
    assert dict(leftover_checkpoints(spec.output, [spec]))[stage].startswith("left over: artefacts/ddpm/")
    assert main(["status", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "checkpoints: 1 file(s)" in out and "1 left over" in out and str(stage.relative_to(spec.output)) in out
    assert spec.remove_spent_checkpoints() == [stage]
    assert leftover_checkpoints(spec.output, [spec]) == []


@pytest.mark.slow
def test_kill_after_the_artefact_then_rerun_leaves_no_checkpoint(tmp_path: Path) -> None:
    """A ddpm run SIGKILLed at its first probe epoch (the backbone artefact and its final
    pre-training checkpoint are written), then run again to the end: no checkpoint is left."""
    config = make_sweep(tmp_path, ["ddpm"], params={"ddpm": {"train_steps": 10}})
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "bench", "run", "--config", str(config), "--no-progress", "--log-every", "0.2"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    try:
        for line in proc.stderr:
            if "probe: epoch" in line:
                proc.send_signal(signal.SIGKILL)
                break
    finally:
        proc.kill()
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    checkpoints = tmp_path / "results" / "checkpoints"
    left = sorted(p for p in checkpoints.rglob("*") if p.is_file())
    assert any(p.parent.name == "ddpm" and ".loop0" in p.name for p in left), left
    status = subprocess.run([sys.executable, "-m", "bench", "status", "--config", str(config)], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=300)
    assert "left over: artefacts/ddpm/" in status.stdout, status.stdout + status.stderr
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p for p in checkpoints.rglob("*") if p.is_file()) == []
