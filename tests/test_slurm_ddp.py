"""Against a real Slurm: a 2-task (gloo, CPU) pre-training job, requeued mid-run, resumes and matches
a single-task run. Uses tests/test_slurm.py's Slurm fixture (skips, or starts one with CI=true)."""
from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pandas as pd
import pytest
import torch

from bench.cli import main
from bench.config import load_config
from bench.executors.book import load_book
from bench.executors.slurm import wait
from bench.runner import expand
from bench.store import TMP_PREFIX
from tests.conftest import torch_threads, write_sweep
from tests.test_executors import fast_sweep
from tests.test_slurm import SLURM, TIMEOUT_S, _requeue_and_wait, _run_cli, _until, jobs_env, slurm  # noqa: F401

pytestmark = pytest.mark.slurm

STEPS = 200  # long enough to be requeued mid-run
LAYOUT = "checkpoint_every_s = 0\n[slurm.pretrain]\ntasks_per_node = 2\n[pretrain]\nshards = 2\n"


def test_two_task_pretraining_requeued_resumes_writes_once_and_equals_a_single_task_run(
        slurm: None, jobs_env: dict[str, str], tmp_path: Path) -> None:  # noqa: F811 (fixtures, imported)
    body = fast_sweep(extra=SLURM + LAYOUT, methods=("ddpm",)).replace("train_steps = 4", f"train_steps = {STEPS}")
    config = write_sweep(tmp_path, body)
    cfg = load_config(config)
    (spec,) = expand(cfg)
    checkpoint = spec.checkpoint_path(spec.artefact())
    loop_file = checkpoint.with_name(f"{checkpoint.stem}.loop0.pt")
    assert main(["run", "--config", str(config), "--executor", "slurm"]) == 0
    (job,) = load_book(cfg.output).pretrain.values()

    def step_on_disk() -> int:
        try:
            return torch.load(loop_file, weights_only=False)["step"]
        except (OSError, EOFError, RuntimeError, KeyError):
            return 0

    _until(lambda: step_on_disk() >= 3, "the 2-task pre-training job's first checkpoints")
    _requeue_and_wait(job)
    with torch_threads(1):  # meanwhile: one process, the same 2 shards as 2 micro-batches
        reference = expand(load_config(config, ['output="single"']))[0].pretrain()
    statuses = wait(cfg, [spec], report=lambda line: None, timeout_s=TIMEOUT_S)
    assert [s.phase for s in statuses] == ["done"]
    logs = [(Path(cfg.output) / "slurm" / "logs" / f"{job}_{task}_log.err").read_text() for task in (0, 1)]
    assert "process 1 of 2 (gloo" in logs[1] and "restart 1" in logs[1], logs[1][-3000:]
    resumed = re.findall(r"resuming from .* at step (\d+) of (\d+)", logs[0])
    assert len(resumed) == 1 and 0 < int(resumed[0][0]) < STEPS and "restart 1" in logs[0], logs[0][-3000:]
    assert sum(log.count("bench: wrote") for log in logs) == 1  # the artefact, by rank 0, once
    assert not [p for p in checkpoint.parent.iterdir() if not p.name.startswith(TMP_PREFIX)]
    a = torch.load(spec.artefact(), weights_only=False)["state"]
    b = torch.load(reference, weights_only=False)["state"]
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-6) for k in a)
    exact = all(torch.equal(a[k], b[k]) for k in a)
    print(f"\n2-task artefact equals the single-process one bit for bit: {exact}")
    # The single-task sweep (its probe runs on the reference backbone) gives the same table.
    with torch_threads(1):  # as the Slurm run job (cpus_per_task = 1): a thread count may change float sums
        assert main(["run", "--config", str(config), "--executor", "local", "--quiet", "--set", 'output="single"']) == 0
    tables = [pd.read_csv(io.StringIO(_run_cli(["table", "--config", str(config), "--format", "csv",
                                                 "--set", f'output="{out}"'])[0])) for out in ("out", "single")]
    assert all((t[~t["reference"]]["wall_s"] > 0).all() for t in tables)  # wall time: the one column load may change
    pd.testing.assert_frame_equal(*(t.drop(columns="wall_s") for t in tables))
    records = [json.loads(p.read_text()) for out in ("out", "single") for p in (tmp_path / out / "records").iterdir()]
    assert len(records) == 2 and records[0]["metrics"] == records[1]["metrics"]
