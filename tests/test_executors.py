"""Executors without a scheduler: [slurm] config, the job plan, dry runs, resumable pre-training,
the `debug` executor (the Slurm jobs run in-process), code snapshots and squeue/sacct parsing."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from bench.cli import main
from bench.config import load_config
from bench.executors.jobs import PretrainJob, RunJob
from bench.executors.plan import make_plan
from bench.executors.scheduler import _parse
from bench.executors.snapshot import REPO, make_snapshot
from bench.pretrain import PretrainSchedule, pretrain
from bench.resume import resumable
from bench.runner import expand
from tests.conftest import sweep_toml, write_sweep

# The tiny-preset sweep shrunk further (32 px windows, 64 px images, a few steps) so that a run
# takes about a second on one CPU core. tests/test_slurm.py uses the same overrides.
FAST: dict[str, dict[str, Any]] = {
    "ddpm": {"train_steps": 4, "max_side": 64, "window": 32, "channel_mult": [1, 1], "attention_resolutions": [],
             "blocks_medical": [1, 2, 3], "blocks_natural": [1, 2, 3], "probe_ensemble": 2, "probe_max_epochs": 2,
             "probe_pixels_per_epoch": 4096, "overlap": 0.0},
    "unet": {"max_side": 64, "crop": 32, "max_epochs": 2, "steps_per_epoch": 3},
}


def fast_sweep(seeds: str = "[0]", fractions: str = "[1.0]", extra: str = "",
               methods: tuple[str, ...] = ("ddpm", "unet"), tables: dict[str, dict[str, Any]] | None = None) -> str:
    """The FAST sweep; `seeds` and `fractions` as TOML arrays, `tables` (e.g. "slurm") through the
    helper, `extra` raw TOML appended (the broken blocks the loader's error tests feed it)."""
    return sweep_toml(methods, seeds=json.loads(seeds), fractions=json.loads(fractions), output="out",
                      params={m: FAST[m] for m in methods}, tables=tables) + extra


def test_slurm_defaults_with_per_kind_overrides(tmp_path: Path) -> None:
    sweep = load_config(write_sweep(tmp_path, fast_sweep(tables={
        "slurm": {"cpus_per_task": 2, "mem_gb": 8, "setup": ["module load cuda"], "checkpoint_every_s": 60},
        "slurm.pretrain": {"gpus_per_node": 1, "timeout_min": 600},
        "slurm.ssl": {"partition": "short"}})))
    pre, ssl, sup = (sweep.slurm.resources(k) for k in ("pretrain", "ssl", "supervised"))
    assert (pre.gpus_per_node, pre.timeout_min, pre.cpus_per_task, pre.partition) == (1, 600, 2, None)
    assert (ssl.gpus_per_node, ssl.partition, ssl.mem_gb, ssl.setup) == (0, "short", 8.0, ("module load cuda",))
    assert sup.partition is None and sup.cpus_per_task == 2
    assert sweep.slurm.checkpoint_every_s == 60


@pytest.mark.parametrize(("block", "expected"), [
    ("[slurm]\ncpus = 2\n", "slurm.cpus: unknown key"),
    ("[slurm.ssl]\ngpus = 1\n", "slurm.ssl.gpus: unknown key"),
    ("[slurm.gpu]\npartition = 'a'\n", "slurm.gpu: unknown key"),
    ("[slurm]\ncpus_per_task = 'two'\n", "slurm.cpus_per_task: expected a positive integer"),
    ("[slurm.pretrain]\nsetup = 'module load x'\n", "slurm.pretrain.setup: expected a list"),
    ("[slurm]\nmem_gb = -1\n", "slurm.mem_gb: expected a positive number"),
])
def test_bad_slurm_table_is_one_line_naming_file_and_key(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                         block: str, expected: str) -> None:
    config = write_sweep(tmp_path, fast_sweep(extra=block))
    assert main(["run", "--config", str(config), "--executor", "slurm", "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(config) in err and expected in err
    assert not (tmp_path / "out").exists()


def test_dry_run_shows_jobs_arrays_dependencies_and_flags(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config = write_sweep(tmp_path, fast_sweep(seeds="[0, 1]", tables={"slurm.ssl": {"partition": "gpu"}}))
    assert main(["run", "--config", str(config), "--executor", "slurm", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "1 pre-training job(s) and 4 run(s) in 2 array(s)" in out
    ssl, sup = out.split("array bench-ssl-ddpm")[1].split("array bench-supervised-unet")
    assert ssl.startswith(": 2 run(s), after bench-pretrain-ddpm-synthetic-glands")
    assert "--dependency=afterok:" in ssl and "--partition=gpu" in ssl and "--array=0-1%2" in ssl
    assert "--dependency" not in sup and "--partition" not in sup
    assert "export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1}" in sup
    assert not (tmp_path / "out").exists()


def test_plan_builds_each_artefact_once_and_only_when_missing(tmp_path: Path) -> None:
    runs = expand(load_config(write_sweep(tmp_path, fast_sweep(seeds="[0, 1]", fractions="[1.0, 0.1]"))))
    plan = make_plan(runs)
    (task,) = plan.pretrain
    ssl = next(a for a in plan.arrays if a.kind == "ssl")
    sup = next(a for a in plan.arrays if a.kind == "supervised")
    assert len(ssl.specs) == len(sup.specs) == 4 and ssl.artefact == task.artefact and sup.artefact is None
    assert {r.artefact() for r in ssl.specs} == {task.artefact} and task.spec == ssl.specs[0]
    queued = make_plan(runs, {task.artefact: "77"})  # its pre-training job is already in the queue
    assert not queued.pretrain and queued.queued == {task.artefact: "77"}
    task.artefact.parent.mkdir(parents=True)
    task.artefact.touch()                               # built already: nothing to wait for
    built = make_plan(runs)
    assert not built.pretrain and all(a.artefact is None for a in built.arrays)


class _Killed(Exception):
    pass


def _pretrain(images: list[np.ndarray], seed: int, die_at: int | None = None) -> tuple[dict[str, torch.Tensor], int]:
    """A tiny pre-training loop; returns the weights and how many steps it computed."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 3, padding=1))
    steps = []

    def loss(m: nn.Module, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        if len(steps) == die_at:
            raise _Killed
        steps.append(1)
        noise = torch.randn(x.shape, generator=gen)
        return ((m(x + noise) - x) ** 2).mean()

    sched = PretrainSchedule(steps=12, batch=2, crop=16, lr=1e-2, ema_decay=0.9)
    return pretrain(model, images, sched, loss, torch.device("cpu"), seed=seed), len(steps)


def _two_stages(images: list[np.ndarray], die_at: int | None = None) -> tuple[dict, dict, int]:
    """Two loops in one artefact build (as maskdm's two stages); a kill may hit the second."""
    first, n1 = _pretrain(images, seed=3)
    second, n2 = _pretrain(images, seed=4, die_at=die_at)
    return first, second, n1 + n2


@pytest.mark.slow
def test_killed_pretraining_resumes_bit_identical_from_its_checkpoint(tmp_path: Path, one_thread: None) -> None:
    images = [np.random.default_rng(i).integers(0, 255, (24, 28, 3), dtype=np.uint8) for i in range(3)]
    reference = _two_stages(images)
    ckpt = tmp_path / "ckpt.pt"
    with pytest.raises(_Killed), resumable(ckpt, every_s=0):
        _two_stages(images, die_at=7)
    assert [torch.load(tmp_path / f"ckpt.loop{i}.pt", weights_only=True)["step"] for i in (0, 1)] == [12, 7]
    with resumable(ckpt, every_s=0):
        resumed = _two_stages(images)
    assert resumed[2] == 12 - 7  # the first loop is not recomputed, the second continues at step 7
    assert not list(tmp_path.iterdir())  # the finished scope removes its checkpoints
    for ref, res in zip(reference[:2], resumed[:2]):
        assert ref.keys() == res.keys() and all(torch.equal(ref[k], res[k]) for k in ref)


def _killed_and_requeued(spec: Any, monkeypatch: pytest.MonkeyPatch, module: Any, name: str, stage: str) -> int:
    """Kill `spec` as its loop's second epoch starts (`module.name` runs once an epoch), then run
    it again as a requeued job would; return how often `module.name` ran in all."""
    real, calls = getattr(module, name), [0]

    def dying(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] == 2:
            raise KeyboardInterrupt  # what a job sees of scancel / preemption, as late as it comes
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, dying)
    with pytest.raises(KeyboardInterrupt):
        spec.execute(checkpoint_every_s=0)
    runs = Path(spec.output) / "checkpoints" / "runs"
    assert [p.name for p in runs.iterdir()] == [f"{spec.run_id}.{stage}.loop0.pt"]
    assert not spec.record_path.exists()
    assert spec.execute(checkpoint_every_s=0) == spec.record_path
    assert not any(runs.iterdir())  # the finished loop's checkpoint is gone
    monkeypatch.setattr(module, name, real)
    return calls[0]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["ddpm", "unet"])
def test_a_run_killed_in_its_training_loop_continues_it_when_requeued(
        method: str, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch,
        one_thread: None) -> None:
    """The run's own checkpoint (an SSL run's probe, a baseline's trainer): the requeued run
    trains the second epoch again, not the first, and its record equals that of a run never
    interrupted (weights, optimiser, RNG streams, early stopping and loss history restored)."""
    from bench import supervised
    from bench.probe import train as train_module

    hook = (train_module, "_run_epoch", "probe") if method == "ddpm" else (supervised, "epoch_batches", "train")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    spec, other = (next(iter(expand(load_config(write_sweep(tmp_path / d, fast_sweep(methods=(method,)))))))
                   for d in ("a", "b"))
    assert _killed_and_requeued(spec, monkeypatch, *hook) == 3  # epochs 1, 2 (killed), 2
    assert "resuming from" in capsys.readouterr().err
    resumed, whole = (json.loads(Path(str(r.execute())).read_text()) for r in (spec, other))
    assert resumed["metrics"] == whole["metrics"] and resumed["history"] == whole["history"]


@pytest.mark.slow
def test_debug_executor_runs_the_slurm_jobs_and_they_match_local(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                                 one_thread: None) -> None:
    config = write_sweep(tmp_path, fast_sweep())
    assert main(["run", "--config", str(config), "--executor", "debug", "--quiet"]) == 0
    runs = expand(load_config(config))
    ddpm = next(r for r in runs if r.method == "ddpm")
    records = {r.run_id: r.record_path.stat().st_mtime_ns for r in runs}
    artefact = ddpm.artefact()
    assert artefact.exists() and not list((tmp_path / "out" / "checkpoints").rglob("*.pt"))
    # A requeued job whose work is on disk returns at once and rewrites nothing.
    assert [RunJob(r)() for r in runs] == [str(r.record_path) for r in runs]
    assert PretrainJob(ddpm)() == str(artefact)
    assert {r.run_id: r.record_path.stat().st_mtime_ns for r in runs} == records
    # The artefact the pre-training job built equals the one a local run builds for itself.
    local = expand(load_config(config, ['output="local"']))
    local_ddpm = next(r for r in local if r.method == "ddpm")
    local_ddpm.execute()
    a = torch.load(artefact, weights_only=True)["state"]
    b = torch.load(local_ddpm.artefact(), weights_only=True)["state"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    capsys.readouterr()
    assert main(["status", "--config", str(config)]) == 0
    assert "total: 2 done" in capsys.readouterr().out


def test_snapshot_is_a_frozen_copy_reused_while_the_code_is_unchanged(tmp_path: Path) -> None:
    snap = make_snapshot(tmp_path)
    for name in ("bench/runner.py", "bench/executors/jobs.py", "methods/ddpm.py", "baselines/unet.py"):
        assert (snap / name).read_bytes() == (REPO / name).read_bytes()
    assert make_snapshot(tmp_path) == snap
    if (REPO / ".git").exists():
        head = ["git", "rev-parse", "HEAD"]
        assert subprocess.run(head, cwd=snap, capture_output=True, text=True).stdout == \
            subprocess.run(head, cwd=REPO, capture_output=True, text=True).stdout


def test_scheduler_output_parsing() -> None:
    states = _parse("12_[3-5]|PENDING|Dependency\n12_1|RUNNING|None\n13|CANCELLED by 0|\n"
                    "13.batch|CANCELLED|\n14|PENDING|DependencyNeverSatisfied\n15|REQUEUED|\n")
    assert sorted(states) == ["12_1", "12_3", "12_4", "12_5", "13", "14", "15"]
    assert states["12_4"].phase == "pending" and states["12_1"].phase == "running"
    assert states["13"].state == "CANCELLED" and states["13"].phase == "ended"
    assert states["14"].phase == "ended" and states["14"].stuck  # waits for a job that failed
    assert states["15"].phase == "pending"
