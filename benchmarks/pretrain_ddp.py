"""Seconds per pre-training step of the tiny ddpm: 1 process against N data-parallel processes.

The global batch is the same in both (`--batch`); each of the N processes (gloo on CPUs, one
thread each unless OMP_NUM_THREADS says otherwise) trains on batch / N crops and all-reduces the
gradients. A step's time is (time of warm-up + S steps - time of warm-up) / S, per process count.

    PYTHONPATH=. python benchmarks/pretrain_ddp.py --processes 2 --steps 30 --batch 8
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench import distributed, registry
from bench.context import RunContext

WARMUP = 3


def _seconds(steps: int, batch: int) -> float:
    plugin_cls = registry.get("ddpm")
    plugin = plugin_cls(plugin_cls.resolve_config("tiny", {"train_steps": steps, "train_batch": batch}))
    images = [np.random.default_rng(i).integers(0, 255, (96, 96, 3), dtype=np.uint8) for i in range(8)]
    torch.manual_seed(0)
    distributed.barrier()
    start = time.perf_counter()
    plugin.pretrain(images, RunContext(spec=None, device=torch.device("cpu")))  # type: ignore[arg-type]
    distributed.barrier()
    return time.perf_counter() - start


def step_time(steps: int, batch: int) -> float:
    return (_seconds(WARMUP + steps, batch) - _seconds(WARMUP, batch)) / steps


def _worker(steps: int, batch: int, out: str) -> None:
    seconds = step_time(steps, batch)
    if distributed.layout().main:
        Path(out).write_text(str(seconds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    one = step_time(args.steps, args.batch)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "seconds"
        distributed.spawn(_worker, args.processes, args.steps, args.batch, str(out))
        many = float(out.read_text())
    print(f"tiny ddpm, global batch {args.batch}, {args.steps} steps, {os.environ['OMP_NUM_THREADS']} thread(s) "
          f"per process, {os.cpu_count()} CPUs (load average {os.getloadavg()[0]:.1f})")
    print(f"1 process:   {one * 1000:.1f} ms/step")
    print(f"{args.processes} processes: {many * 1000:.1f} ms/step  (speed-up {one / many:.2f}x)")


if __name__ == "__main__":
    main()
