"""Data-parallel pre-training: one process per GPU (or per CPU task) in one torch.distributed group.

A Slurm pre-training job with several tasks (`[slurm.pretrain] gpus_per_node`, `nodes`) or a local
pre-training with `[pretrain] local_processes` runs the same shared loop (bench/pretrain.py) in every
process; this module is what makes them one training run:

- `process_group` / `slurm_group` / `spawn`: the group (NCCL on GPUs, gloo on CPUs), its rank, size
  and master address from Slurm's environment (as submitit's JobEnvironment reads it) or from the
  local launcher;
- `step_shards`: each step's global batch is cut into `shards` equal parts, each with its own random
  stream; a process trains on its parts (several: gradients are accumulated), so any process count
  that divides `shards` trains the same weights (up to float rounding);
- `wrap`: DistributedDataParallel around the model (SyncBatchNorm on GPUs);
- `build_once`: the artefact is written once, by rank 0, while every rank trains.

Outside a group (world size 1) every function here is a no-op and the loop is the plain one.
"""
from __future__ import annotations

import contextlib
import os
import socket
import sys
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from bench.device import pick_device
from bench.errors import BenchError
from bench.store import atomic_torch_save, cached_torch, file_lock, load_torch

T = TypeVar("T")
PORT_BASE, PORT_SPAN = 20000, 20000   # Slurm jobs pick their master port in this range (by job id)
TIMEOUT = timedelta(minutes=30)       # a rank waiting this long for the others fails the job

_SHARDS: ContextVar[int | None] = ContextVar("bench_pretrain_shards", default=None)
_LOCAL_RANK = [0]


@dataclass(frozen=True)
class Layout:
    """This process's place in the pre-training group; world 1 means no group."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def layout() -> Layout:
    if not (dist.is_available() and dist.is_initialized()):
        return Layout()
    return Layout(dist.get_rank(), dist.get_world_size(), _LOCAL_RANK[0])


@contextlib.contextmanager
def process_group(rank: int, world: int, local_rank: int, master: str, port: int) -> Iterator[Layout]:
    """Join (and at the end leave) the group of `world` processes; world 1 is no group at all."""
    if world == 1:
        yield Layout()
        return
    device = pick_device()
    if device.type == "cuda":
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, init_method=f"tcp://{master}:{port}", rank=rank, world_size=world,
                            timeout=TIMEOUT)
    _LOCAL_RANK[0] = local_rank
    print(f"bench: pre-training process {rank} of {world} ({backend}, master {master}:{port})",
          file=sys.stderr, flush=True)
    try:
        yield layout()
    finally:
        dist.destroy_process_group()


def slurm_group() -> contextlib.AbstractContextManager[Layout]:
    """The group of this Slurm job's tasks: ranks and the first node as master, from submitit."""
    import submitit

    try:
        env = submitit.JobEnvironment()
    except RuntimeError:  # not inside a submitit job (the `debug` executor runs jobs in-process)
        return process_group(0, 1, 0, "", 0)
    job = int("".join(ch for ch in os.environ.get("SLURM_JOB_ID", "0") if ch.isdigit()) or 0)
    restart = int(os.environ.get("SLURM_RESTART_COUNT", "0"))
    port = PORT_BASE + (job * 7 + restart) % PORT_SPAN  # a requeued job never reuses its old port
    return process_group(env.global_rank, env.num_tasks, env.local_rank, env.hostnames[0], port)


def spawn(fn: Callable[..., Any], processes: int, *args: Any) -> None:
    """Run `fn(*args)` in `processes` new processes on this machine, as one group (rank = GPU)."""
    if pick_device().type == "cuda" and processes > torch.cuda.device_count():
        raise BenchError(f"pretrain.local_processes = {processes}, but this machine has "
                         f"{torch.cuda.device_count()} GPU(s)")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    torch.multiprocessing.start_processes(_spawned, args=(processes, port, fn, args), nprocs=processes,
                                          start_method="spawn")


def _spawned(rank: int, world: int, port: int, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    if "OMP_NUM_THREADS" not in os.environ:  # the processes share this machine's cores
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    with process_group(rank, world, rank, "127.0.0.1", port):
        fn(*args)


# --- the step's shards ---------------------------------------------------------------------------
@contextlib.contextmanager
def sharding(shards: int | None) -> Iterator[None]:
    """Pre-training loops in this scope cut each step's batch into `shards` (None: one per process)."""
    token = _SHARDS.set(shards)
    try:
        yield
    finally:
        _SHARDS.reset(token)


@dataclass(frozen=True)
class StepShards:
    total: int       # equal parts of every step's global batch, each with its own random stream
    mine: range      # the parts this process trains on, one micro-batch each
    size: int        # crops per part


def step_shards(batch: int) -> StepShards:
    lay = layout()
    total = _SHARDS.get() or lay.world
    if total % lay.world:
        raise BenchError(f"pretrain.shards = {total} is not a multiple of the {lay.world} pre-training processes")
    if batch % total:
        raise BenchError(f"a pre-training batch of {batch} does not split into {total} equal shards "
                         "(one per process, or pretrain.shards)")
    per_rank = total // lay.world
    return StepShards(total, range(lay.rank * per_rank, (lay.rank + 1) * per_rank), batch // total)


# --- the model -----------------------------------------------------------------------------------
class _DDP(DistributedDataParallel):
    """DDP whose other attributes are the wrapped model's (a loss may call `model.patchify`)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.module, name)


def wrap(model: nn.Module, device: torch.device, find_unused: bool = False) -> nn.Module:
    """The model as the loss sees it: DDP in a group (BatchNorm synchronised on GPUs), else itself."""
    if layout().world == 1:
        return model
    if device.type == "cuda":  # SyncBatchNorm has no CPU kernel: on CPUs BatchNorm stays per process
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return _DDP(model, device_ids=[torch.cuda.current_device()], find_unused_parameters=find_unused)
    return _DDP(model, find_unused_parameters=find_unused)


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, DistributedDataParallel) else model


def accumulating(model: nn.Module, accumulate: bool) -> contextlib.AbstractContextManager:
    """DDP: skip the gradient all-reduce for all but the last micro-batch of a step."""
    if accumulate and isinstance(model, DistributedDataParallel):
        return model.no_sync()
    return contextlib.nullcontext()


# --- collectives (no-ops without a group) -------------------------------------------------------
def _comm_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def all_reduce_(t: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """Reduce `t` over the group in place (sum or max); a tensor on another device is copied there."""
    if layout().world == 1:
        return t
    red = dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX
    dev = _comm_device()
    if t.device == dev:
        dist.all_reduce(t, op=red)
        return t
    moved = t.to(dev)
    dist.all_reduce(moved, op=red)
    return t.copy_(moved)


def main_says(flag: bool) -> bool:
    """Rank 0's `flag`, on every rank (so all take the same branch)."""
    if layout().world == 1:
        return flag
    t = torch.tensor([int(flag)], device=_comm_device())
    dist.broadcast(t, src=0)
    return bool(t.item())


def agree(value: int, what: str) -> None:
    """Fail on every rank if the ranks do not hold the same `value`."""
    if layout().world == 1:
        return
    t = torch.tensor([value, -value], dtype=torch.long, device=_comm_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    if int(t[0]) != value or -int(t[1]) != value:
        raise BenchError(f"pre-training processes disagree on {what}: {value} here, {int(t[0])} / "
                         f"{-int(t[1])} at most / least (is the checkpoint folder shared by every node?)")


def barrier() -> None:
    if layout().world > 1:
        dist.barrier()


def build_once(path: str | Path, build: Callable[[], T]) -> T:
    """`cached_torch` for a group: every rank builds (trains) together, rank 0 alone saves."""
    if layout().world == 1:
        return cached_torch(path, build)
    path = Path(path)
    main = layout().main
    with file_lock(path.with_name(path.name + ".lock")) if main else contextlib.nullcontext():
        exists = main_says(path.exists())
        obj = None if exists else build()
        if not exists and main:
            atomic_torch_save(path, obj)
            print(f"bench: wrote {path}", file=sys.stderr, flush=True)
    barrier()
    return load_torch(path) if exists else obj  # type: ignore[return-value]
