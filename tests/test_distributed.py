"""Data-parallel pre-training on CPUs: 2 gloo processes train what 1 process does with 2 shards."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from bench import distributed, registry
from bench.cli import main
from bench.config import load_config
from bench.device import seed_everything
from bench.distributed import StepShards, sharding, spawn
from bench.errors import BenchError
from bench.executors.local import pretrain_spawned
from bench.nn.swav_loss import sinkhorn
from bench.pretrain import PretrainSchedule, step_batches
from bench.runner import expand
from tests.conftest import torch_threads, write_sweep
from tests.test_executors import fast_sweep

SHARDED = "[pretrain]\nshards = 2\n"


def _spec(folder: Path, method: str = "ddpm", extra: str = SHARDED, steps: int = 3):
    body = fast_sweep(methods=(method,), extra=extra).replace("train_steps = 4", f"train_steps = {steps}")
    folder.mkdir(parents=True, exist_ok=True)
    (spec,) = expand(load_config(write_sweep(folder, body)))
    return spec


def test_processes_crops_are_the_single_process_batch_and_shard_streams_do_not_depend_on_placement() -> None:
    pool = [torch.rand(3, 40, 50) * 2 - 1, torch.rand(3, 20, 70) * 2 - 1]  # one smaller than the crop
    sched = PretrainSchedule(steps=1, batch=8, crop=32, lr=1e-3)

    def draw(mine: range, total: int = 4) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        gen = torch.Generator().manual_seed(7)
        parts = list(step_batches(pool, sched, StepShards(total, mine, 8 // total), gen))
        return [x for x, _ in parts], [torch.rand(3, generator=g) for _, g in parts]

    one_crops, one_draws = draw(range(0, 4))              # one process, four micro-batches
    two = [draw(range(0, 2)), draw(range(2, 4))]          # two processes, two each
    assert torch.equal(torch.cat(one_crops), torch.cat(two[0][0] + two[1][0]))
    assert all(torch.equal(a, b) for a, b in zip(one_draws, two[0][1] + two[1][1]))
    plain = step_batches(pool, sched, StepShards(1, range(1), 8), torch.Generator().manual_seed(7))
    assert torch.equal(next(plain)[0], torch.cat(one_crops))  # the same crops as the unsharded loop


@pytest.mark.slow
def test_two_gloo_processes_train_the_weights_of_one_process(tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    spec = _spec(tmp_path)
    with torch_threads(1):
        one = spec.pretrain()
    state_one = torch.load(one, weights_only=False)["state"]
    two = _spec(tmp_path / "two")
    pretrain_spawned([two], 2, checkpoint_every_s=0.0)
    state_two = torch.load(two.artefact(), weights_only=False)["state"]
    err = capfd.readouterr().err
    assert err.count("bench: wrote") == 1 and "process 1 of 2 (gloo" in err, err[-2000:]
    assert state_one.keys() == state_two.keys()
    assert all(torch.allclose(state_one[k].float(), state_two[k].float(), atol=1e-6) for k in state_one)
    seed_everything(spec.seed)
    initial = registry.get("ddpm")(spec.resolved_config()).build_model().state_dict()
    assert any(not torch.allclose(initial[k].float(), state_one[k].float()) for k in initial)  # it trained
    assert not list((Path(two.output) / "checkpoints").rglob("*.pt"))  # rank 0 removed the checkpoint


def _group_worker(out: str) -> None:
    """Each rank: Sinkhorn on its half of a batch; 2 steps of each method's loop; save what it got."""
    from bench.context import RunContext

    lay = distributed.layout()
    scores = torch.randn(16, 5, generator=torch.Generator().manual_seed(0))
    codes = sinkhorn(scores[lay.rank * 8 : (lay.rank + 1) * 8], 0.05, 3)
    states = {}
    images = [np.random.default_rng(i).integers(0, 255, (64, 64, 3), dtype=np.uint8) for i in range(3)]
    for name, params in METHODS.items():
        plugin = registry.get(name)(registry.get(name).resolve_config("tiny", params))
        ctx = RunContext(spec=None, device=torch.device("cpu"))  # type: ignore[arg-type]
        states[name] = plugin.pretrain(images, ctx)
    torch.save({"codes": codes, "states": states}, Path(out) / f"rank{lay.rank}.pt")


METHODS = {
    "mdm": {"train_steps": 2, "max_side": 64, "window": 32, "channel_mult": [1, 1], "attention_resolutions": [],
            "blocks_medical": [1, 2, 3], "blocks_natural": [1, 2, 3]},  # the two-level UNet's decoder blocks
    "mae": {"train_steps": 2, "max_side": 64, "window": 32},
    "maskdm": {"stage1_steps": 2, "stage2_steps": 2, "max_side": 64, "window": 32},
    "swav": {"train_steps": 10, "queue_start": 2, "freeze_prototypes_steps": 8},  # frozen, then queued
}


@pytest.mark.slow
def test_every_method_trains_in_a_group_and_sinkhorn_codes_cover_the_global_batch(tmp_path: Path) -> None:
    spawn(_group_worker, 2, str(tmp_path))
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    scores = torch.randn(16, 5, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(torch.cat([r["codes"] for r in ranks]), sinkhorn(scores, 0.05, 3), atol=1e-6)
    for name in METHODS:  # DDP kept the replicas equal (BatchNorm's running statistics aside)
        a, b = (r["states"][name] for r in ranks)
        same = [k for k in a if "running_" not in k and "num_batches" not in k]
        assert all(torch.equal(a[k], b[k]) for k in same), name


def test_a_batch_the_processes_cannot_split_is_one_config_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config = write_sweep(tmp_path, fast_sweep(methods=("ddpm",), extra="[pretrain]\nlocal_processes = 3\n"))
    assert main(["run", "--config", str(config), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"bench: error: {config}: pretrain.local_processes: ddpm's pre-training batch of 4 "
                   "does not split into 3 equal parts (one per process)")
    assert not (tmp_path / "out").exists()
    with sharding(3), pytest.raises(BenchError, match="does not split into 3"):
        distributed.step_shards(4)


@pytest.mark.parametrize(("block", "expected"), [
    ("[slurm]\nnodes = 2\n", "slurm.nodes: only [slurm.pretrain]"),
    ("[slurm.ssl]\ntasks_per_node = 2\n", "slurm.ssl.tasks_per_node: only [slurm.pretrain]"),
    ("[slurm.pretrain]\nnodes = 0\n", "slurm.pretrain.nodes: expected a positive integer"),
    ("[pretrain]\nshards = 0\n", "pretrain.shards: expected a positive integer"),
    ("[pretrain]\ngpus = 2\n", "pretrain.gpus: unknown key"),
    ("[pretrain]\nshards = 3\n[slurm.pretrain]\ntasks_per_node = 2\n", "pretrain.shards: 3 is not a multiple"),
])
def test_bad_layout_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture, block: str, expected: str) -> None:
    config = write_sweep(tmp_path, fast_sweep(methods=("ddpm",), extra=block))
    assert main(["run", "--config", str(config), "--executor", "slurm", "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(config) in err and expected in err, err


def test_dry_run_asks_for_a_task_per_gpu_on_every_node(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    block = "[slurm.pretrain]\nnodes = 2\ngpus_per_node = 8\n[slurm.ssl]\ngpus_per_node = 2\n"
    body = fast_sweep(methods=("ddpm",), extra=block).replace("train_steps = 4", "train_steps = 4\ntrain_batch = 16")
    config = write_sweep(tmp_path, body)
    assert main(["run", "--config", str(config), "--executor", "slurm", "--dry-run"]) == 0
    out = capsys.readouterr().out
    pre, array = out.split("array ")[0], out.split("array ")[1]
    assert "--nodes=2" in pre and "--ntasks-per-node=8" in pre and "--gpus-per-node=8" in pre
    assert "--ntasks" not in array and "--gpus-per-node=2" in array  # a probe run stays one task
