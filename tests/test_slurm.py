"""Against a real Slurm: job arrays after a pre-training job, scancel + rerun, requeue + resume.

A session fixture uses the Slurm it finds (`sinfo` answers) or, as root where allowed (CI=true,
or BENCH_SLURM_SETUP=1), starts a throwaway one with scripts/slurm_setup.sh and stops it at the
end. Elsewhere these tests skip; in CI a Slurm that cannot be started is a failure, not a skip.
"""
from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import pandas as pd
import pytest
import torch

from bench.cli import main
from bench.config import load_config
from bench.executors.book import JobBook, load_book
from bench.executors.scheduler import job_states
from bench.executors.slurm import wait
from bench.runner import expand
from bench.store import TMP_PREFIX
from tests.conftest import REPO, write_sweep
from tests.test_executors import fast_sweep

pytestmark = pytest.mark.slurm

SEEDS = int(os.environ.get("BENCH_SLURM_SEEDS", "3"))  # per cell (the paper has 10; 3 x 4 cells make the arrays)
SLURM = '[slurm]\ncpus_per_task = 1\ntimeout_min = 30\npoll_s = 2\n'
SETUP_TIMEOUT_S = 900            # includes apt-get on a fresh machine
TIMEOUT_S = 900                  # the longest any single wait in here may take (a busy 2-core box)


def _slurm_answers() -> bool:
    if not shutil.which("sbatch") or not shutil.which("sinfo"):
        return False
    try:
        proc = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return False
    return proc.returncode == 0 and bool(re.search(r"idle|mixed|alloc", proc.stdout))


def _cannot_start() -> str | None:
    if os.geteuid() != 0:
        return "no Slurm reachable, and starting one needs root"
    if not shutil.which("apt-get") and not shutil.which("slurmctld"):
        return "no Slurm reachable and no apt-get to install one"
    if os.environ.get("CI", "").lower() != "true" and os.environ.get("BENCH_SLURM_SETUP") != "1":
        return "no Slurm reachable; BENCH_SLURM_SETUP=1 lets the tests install and start a throwaway one"
    return None


def _give_up(why: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true but Slurm is unavailable: {why}")
    pytest.skip(why)


@pytest.fixture(scope="session")
def slurm() -> Iterator[None]:
    if _slurm_answers():
        yield
        return
    why = _cannot_start()
    if why:
        _give_up(why)
    proc = subprocess.run(["bash", str(REPO / "scripts" / "slurm_setup.sh")], capture_output=True,
                          text=True, timeout=SETUP_TIMEOUT_S)
    if proc.returncode != 0 or not _slurm_answers():
        _give_up(f"scripts/slurm_setup.sh failed: {(proc.stdout + proc.stderr)[-2000:]}")
    try:
        yield
    finally:
        subprocess.run(["bash", str(REPO / "scripts" / "slurm_teardown.sh")], timeout=120)


@pytest.fixture(scope="module")
def jobs_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The environment the jobs inherit from `bench run`: the session's data cache, one thread."""
    env = {"BENCH_CACHE": str(tmp_path_factory.getbasetemp() / "bench-cache"), "OMP_NUM_THREADS": "1"}
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        yield {**os.environ, **env}


def _until(condition, what: str, timeout: float = TIMEOUT_S, every: float = 0.5,
           story: Callable[[], str] = lambda: ""):
    """Poll `condition` until it is truthy; on timeout fail with `story()` (what Slurm says)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{story()}")


def _slurm_story(job_id: str, *logs: Path) -> str:
    """Everything Slurm and the job's logs say of `job_id`: the message of a timed-out wait."""
    base = job_id.split("_")[0]
    commands = (["scontrol", "show", "job", job_id], ["squeue", "-h", "-r", "-o", "%i|%T|%r|%S"],
                ["sacct", "-D", "-X", "-n", "-P", "-o", "JobID,State,Start,End,ExitCode", "-j", base])
    parts = []
    for cmd in commands:
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
            parts.append(f"$ {' '.join(cmd)}\n{proc.stdout}{proc.stderr}")
        except (OSError, subprocess.SubprocessError) as exc:
            parts.append(f"$ {' '.join(cmd)}\n{exc}")
    ctld = Path(os.environ.get("BENCH_SLURM_DIR", "/tmp/bench-slurm")) / "log" / "slurmctld.log"
    for log in (*logs, ctld):
        text = log.read_text(errors="replace") if log.is_file() else "(missing)"
        if log == ctld:
            text = "\n".join(line for line in text.splitlines() if f"JobId={base}" in line)
        parts.append(f"--- {log} (tail)\n{text[-3000:]}")
    return "\n".join(parts)


def _scontrol(*args: str) -> None:
    subprocess.run(["scontrol", *args], check=True, capture_output=True, text=True, timeout=30)


@dataclass
class Sweep:
    config: Path
    victim: str              # the run whose job was cancelled
    book: JobBook            # after the first submission
    status_text: str         # `bench status` after the first wait
    rerun_err: str           # what the rerun (`bench run --wait`) said
    local: Path              # the same sweep run in-process
    seconds: dict[str, float]


@pytest.fixture(scope="module")
def sweep(slurm: None, jobs_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Sweep:
    """Submit 4 x SEEDS runs as arrays, scancel one, wait, check status, rerun, wait; and locally."""
    folder = tmp_path_factory.mktemp("slurm-sweep")
    config = write_sweep(folder, fast_sweep(seeds=str(list(range(SEEDS))), fractions="[1.0, 0.1]", extra=SLURM))
    cfg = load_config(config)
    runs = expand(cfg)
    start = time.monotonic()
    assert main(["run", "--config", str(config), "--executor", "slurm"]) == 0
    book = load_book(cfg.output)
    victim = [r for r in runs if r.method == "ddpm"][-1].run_id  # waits behind the pre-training job
    subprocess.run(["scancel", book.runs[victim]], check=True, timeout=30)
    local_log = folder / "local.log"
    with open(local_log, "w") as log:
        local = subprocess.Popen([sys.executable, "-m", "bench", "run", "--config", str(config), "--quiet",
                                  "--executor", "local", "--set", 'output="local"'], env=jobs_env,
                                 stdout=log, stderr=subprocess.STDOUT)
    wait(cfg, runs, report=lambda line: None, timeout_s=TIMEOUT_S)
    first = time.monotonic() - start
    status = _run_cli(["status", "--config", str(config)])[0]
    rerun = subprocess.run([sys.executable, "-m", "bench", "run", "--config", str(config), "--executor", "slurm",
                            "--wait"], env=jobs_env, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    total = time.monotonic() - start
    assert local.wait(timeout=TIMEOUT_S) == 0, local_log.read_text()[-3000:]
    return Sweep(config, victim, book, status, rerun.stderr + rerun.stdout, folder / "local",
                 {"first_wait": first, "with_rerun": total, "local_done": time.monotonic() - start})


def _run_cli(argv: list[str]) -> tuple[str, str]:
    from contextlib import redirect_stderr, redirect_stdout

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(argv)
    assert code == 0, err.getvalue()
    return out.getvalue(), err.getvalue()


def test_cancelled_job_shows_failed_and_a_rerun_submits_only_it(sweep: Sweep) -> None:
    # A pending array task cancelled by scancel leaves no sacct record: CANCELLED or GONE.
    failed = [line for line in sweep.status_text.splitlines() if re.search(r"\bjob \d+_\d+ +(CANCELLED|GONE)", line)]
    assert len(failed) == 1 and sweep.victim in failed[0], sweep.status_text
    assert f"total: {4 * SEEDS - 1} done, 1 failed" in sweep.status_text
    assert "submitted 0 pre-training job(s) and 1 run(s) in 1 array(s)" in sweep.rerun_err
    after = load_book(load_config(sweep.config).output)
    changed = {run for run, job in after.runs.items() if sweep.book.runs[run] != job}
    assert changed == {sweep.victim}


def test_every_cell_has_all_seeds_and_the_table_equals_a_local_run(sweep: Sweep) -> None:
    print(f"\nslurm sweep of {4 * SEEDS} runs: {sweep.seconds}")
    tables = []
    for output in ("out", "local"):
        out, _ = _run_cli(["table", "--config", str(sweep.config), "--format", "csv", "--set", f'output="{output}"'])
        tables.append(pd.read_csv(io.StringIO(out)))
    slurm_table, local_table = tables
    runs = slurm_table[~slurm_table["reference"]]
    assert len(runs) == 4 and (runs["n"] == SEEDS).all() and slurm_table["reference"].sum() == 2
    # Wall time is the one column a machine's load may change; every other cell must be equal.
    assert (runs["wall_s"] > 0).all() and slurm_table[slurm_table["reference"]]["wall_s"].isna().all()
    pd.testing.assert_frame_equal(slurm_table.drop(columns="wall_s"), local_table.drop(columns="wall_s"))
    records = {p.name: json.loads(p.read_text()) for p in (sweep.config.parent / "out" / "records").iterdir()}
    local = {p.name: json.loads(p.read_text()) for p in (sweep.local / "records").iterdir()}
    assert records.keys() == local.keys() and len(records) == 4 * SEEDS
    assert all(records[k]["metrics"] == local[k]["metrics"] for k in records)  # bit for bit, every run


def test_jobs_ran_the_snapshot_of_the_code(sweep: Sweep) -> None:
    output = Path(load_config(sweep.config).output)
    snapshots = set(load_book(output).snapshots.values())
    assert snapshots and all((Path(p) / "bench" / "runner.py").is_file() for p in snapshots)
    logs = list((output / "slurm" / "logs").glob("*_log.err"))
    codes = {m for log in logs for m in re.findall(r"code (\S+)\)", log.read_text())}
    assert len(logs) == 4 * SEEDS + 1  # pre-training, the runs but the cancelled one, its rerun
    assert codes and codes <= snapshots  # every job imported bench from a snapshot
    # Records name the commit the snapshot was taken from (HEAD may have moved on since).
    heads = {subprocess.run(["git", "rev-parse", "HEAD"], cwd=p, capture_output=True, text=True).stdout.strip()
             or "unknown" for p in snapshots}
    commits = {json.loads(p.read_text())["provenance"]["git"]["commit"] for p in (output / "records").iterdir()}
    assert commits <= heads


def _requeue_and_wait(job_id: str) -> None:
    """scontrol requeue, and wait until the job has started again. Slurm holds a requeued job for
    its credential lifetime (cred_expire: 20 s in scripts/slurm_setup.sh, 120 s by default): a job
    started sooner on the same node is killed as "Job credential revoked", so the hold stays."""
    _scontrol("requeue", job_id)
    _until(lambda: job_states([job_id])[job_id].state == "PENDING", f"job {job_id} to be pending again",
           story=lambda: _slurm_story(job_id))
    _until(lambda: job_states([job_id])[job_id].state != "PENDING", f"requeued job {job_id} to start",
           every=2, story=lambda: _slurm_story(job_id))


def _ended_with(job_id: str, log: Path, line: str) -> bool:
    """True once `job_id` has ended with `line` in its log; a job that ended without it fails now."""
    if job_states([job_id])[job_id].phase != "ended":
        return False
    if line not in (log.read_text() if log.is_file() else ""):
        raise AssertionError(f"job {job_id} ended without {line!r} in its log\n{_slurm_story(job_id, log)}")
    return True


def test_requeued_pretraining_resumes_from_its_checkpoint_and_writes_one_record(
        slurm: None, jobs_env: dict[str, str], tmp_path: Path) -> None:
    steps = 200
    body = fast_sweep(extra=SLURM + "checkpoint_every_s = 0\n", methods=("ddpm",))
    config = write_sweep(tmp_path, body.replace("train_steps = 4", f"train_steps = {steps}"))
    cfg = load_config(config)
    (spec,) = expand(cfg)
    checkpoint = spec.checkpoint_path(spec.artefact())
    loop_file = checkpoint.with_name(f"{checkpoint.stem}.loop0.pt")  # ddpm pre-trains in one loop
    assert main(["run", "--config", str(config), "--executor", "slurm"]) == 0
    book = load_book(cfg.output)
    (pretrain_job,) = book.pretrain.values()

    def step_on_disk() -> int:
        try:
            return torch.load(loop_file, weights_only=True)["step"]
        except (OSError, EOFError, RuntimeError, KeyError):
            return 0

    _until(lambda: step_on_disk() >= 3, "the pre-training job's first checkpoints")
    _requeue_and_wait(pretrain_job)
    # Meanwhile: the same artefact, built here without interruption.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    reference = load_config(config, ['output="reference"'])
    reference_path = expand(reference)[0].pretrain()
    torch.set_num_threads(before)
    statuses = wait(cfg, [spec], report=lambda line: None, timeout_s=TIMEOUT_S)
    assert [s.phase for s in statuses] == ["done"]
    log = (Path(cfg.output) / "slurm" / "logs" / f"{pretrain_job}_0_log.err").read_text()
    resumed = re.findall(r"resuming from .* at step (\d+) of (\d+)", log)
    assert len(resumed) == 1 and 0 < int(resumed[0][0]) < steps and "restart 1" in log, log[-3000:]
    # Removed once the artefact was saved (a temporary the SIGKILL cut short is left for `bench run`).
    assert not [p for p in checkpoint.parent.iterdir() if not p.name.startswith(TMP_PREFIX)]
    a = torch.load(spec.artefact(), weights_only=True)["state"]
    b = torch.load(reference_path, weights_only=True)["state"]
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed pre-training differs from an uninterrupted one"
    records = list((Path(cfg.output) / "records").iterdir())
    assert [p.name for p in records] == [f"{spec.run_id}.json"]
    # Requeue the finished run's job: it finds its record and exits cleanly, rewriting nothing.
    # (`wait` returns once the record is written; the job may still be exiting: let it end first.)
    run_job = book.runs[spec.run_id]
    run_log = Path(cfg.output) / "slurm" / "logs" / f"{run_job}_0_log.err"
    _until(lambda: job_states([run_job])[run_job].phase == "ended", "the run job to end",
           story=lambda: _slurm_story(run_job, run_log))
    mtime = records[0].stat().st_mtime_ns
    _requeue_and_wait(run_job)
    _until(lambda: _ended_with(run_job, run_log, "already done"), "the requeued run job to finish",
           story=lambda: _slurm_story(run_job, run_log))
    assert job_states([run_job])[run_job].state == "COMPLETED"
    assert [p.stat().st_mtime_ns for p in (Path(cfg.output) / "records").iterdir()] == [mtime]
