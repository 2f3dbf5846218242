"""The shared pre-training loop: random crops of the unlabelled pool, AdamW, optional EMA.

A method supplies only its loss on a batch; crops, flips, optimiser, EMA and progress are the
same for every backbone, so methods differ only where the papers differ. In a torch.distributed
group (bench/distributed.py) the same loop is data parallel: the model is wrapped in DDP, each
process trains on its shards of the global batch, and weights and EMA stay equal on every rank.
The loss curve is kept by the loop's `StageLog` (resumed with the loop) and handed to the
artefact (`collect_histories`).
"""
from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from bench import distributed
from bench.device import autocast, prepare_batch, retained_memory, to_device
from bench.imaging import resize_image, target_size, to_tensor
from bench.progress import SETTINGS, History, StageLog
from bench.resume import Stateful, loop_state
from bench.steptime import STEPS

StepLoss = Callable[[nn.Module, torch.Tensor, torch.Generator], torch.Tensor]


@dataclass(frozen=True)
class PretrainSchedule:
    steps: int
    batch: int
    crop: int
    lr: float
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    ema_decay: float = 0.0          # 0 = no EMA
    grad_clip: float | None = None
    max_side: int | None = None
    hflip: bool = True


# The scale floor (bench.data.scale) of the data set being pre-trained on. A plugin's `pretrain`
# hands this loop only images and a schedule, so the SSL pipeline sets it around that call
# (`pool_floor`); unset, the pool is at the schedule's cap alone.
_POOL_FLOOR: ContextVar[float] = ContextVar("pool_floor", default=0.0)


@contextmanager
def pool_floor(floor: float) -> Iterator[None]:
    """Pre-training loops started inside resize their pool with this scale floor."""
    token = _POOL_FLOOR.set(floor)
    try:
        yield
    finally:
        _POOL_FLOOR.reset(token)


def working_pool(images: list[np.ndarray], max_side: int | None, floor: float = 0.0) -> list[torch.Tensor]:
    """The unlabelled pool as 3 x H x W tensors in [-1, 1] at the preset's working size."""
    return [resize_image(to_tensor(im), target_size(im.shape[:2], max_side, floor))[0] * 2 - 1 for im in images]


def crop_batch(pool: list[torch.Tensor], size: int, batch: int, hflip: bool, gen: torch.Generator,
               keep: range | None = None) -> torch.Tensor:
    """`batch` random crops (crops outside `keep` are drawn, so `gen` advances alike, but not cut)."""
    out = []
    for i in range(batch):
        x = pool[int(torch.randint(len(pool), (1,), generator=gen))]
        h, w = max(size, x.shape[-2]), max(size, x.shape[-1])  # after padding a small image
        top = int(torch.randint(h - size + 1, (1,), generator=gen))
        left = int(torch.randint(w - size + 1, (1,), generator=gen))
        flip = hflip and bool(torch.rand((), generator=gen) < 0.5)
        if keep is not None and i not in keep:
            continue
        if x.shape[-2] < size or x.shape[-1] < size:
            mode = "reflect" if min(x.shape[-2:]) > size // 2 else "constant"
            x = torch.nn.functional.pad(x, (0, w - x.shape[-1], 0, h - x.shape[-2]), mode=mode)
        x = x[:, top : top + size, left : left + size]
        out.append(x.flip(-1) if flip else x)
    return torch.stack(out)


def step_batches(pool: list[torch.Tensor], sched: PretrainSchedule, shards: distributed.StepShards,
                 gen: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Generator]]:
    """This process's micro-batches of one step: (crops, the generator its loss draws from).

    One shard is the plain loop: the whole batch, and `gen` for the loss too. With more, every
    process draws the whole global batch's crops from `gen` (in lockstep, so the union of the
    processes' crops is the single-process batch) and keeps its shards' crops; shard k's loss
    draws from a generator seeded by one more draw of `gen` plus k, so it is the same on whichever
    process (or micro-batch) it runs.
    """
    if shards.total == 1:
        yield crop_batch(pool, sched.crop, sched.batch, sched.hflip, gen), gen
        return
    n = shards.size
    crops = crop_batch(pool, sched.crop, sched.batch, sched.hflip, gen, range(shards.mine.start * n, shards.mine.stop * n))
    base = int(torch.randint(2**62, (1,), generator=gen))
    for j, k in enumerate(shards.mine):
        yield crops[j * n : (j + 1) * n], torch.Generator().manual_seed(base + k)


@retained_memory()  # each step's big temporaries reuse the blocks the step before freed
def pretrain(model: nn.Module, images: list[np.ndarray], sched: PretrainSchedule, step_loss: StepLoss,
             device: torch.device, seed: int, progress: bool = False, desc: str = "pretrain") -> dict[str, torch.Tensor]:
    """Train `model` with `step_loss`; return the (EMA) state dict on the CPU."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    pool = working_pool(images, sched.max_side, _POOL_FLOOR.get())
    model = to_device(model, device).train()
    shards = distributed.step_shards(sched.batch)
    trained = distributed.wrap(model, device, getattr(step_loss, "unused_parameters", False))
    model = distributed.unwrap(trained)  # SyncBatchNorm may have replaced modules
    opt = torch.optim.AdamW(model.parameters(), lr=sched.lr, weight_decay=sched.weight_decay, betas=sched.betas)
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(sched.ema_decay)) if sched.ema_decay else None
    stateful_loss = step_loss if isinstance(step_loss, Stateful) else None  # e.g. a queue it keeps
    history = History(SETTINGS.max_points)
    resume = loop_state({"model": model, "opt": opt, "ema": ema, "loss": stateful_loss, "history": history},
                        gen, sched.steps)
    stage = StageLog(desc, sched.steps, progress and distributed.layout().main, initial=resume.start,
                     history=history)
    parts = len(shards.mine)
    STEPS.start(desc)
    for step in range(resume.start, sched.steps):
        opt.zero_grad(set_to_none=True)
        loss = 0.0  # this process's share of the step's loss
        for i, (crops, draws) in enumerate(step_batches(pool, sched, shards, gen)):
            with distributed.accumulating(trained, i < parts - 1):
                with autocast(device):
                    part = step_loss(trained, prepare_batch(crops, device), draws) / parts
                part.backward()
            loss += part.item()
        if sched.grad_clip:
            nn.utils.clip_grad_norm_(model.parameters(), sched.grad_clip)
        opt.step()
        if ema is not None:
            ema.update_parameters(model)
        stage.update(step + 1, loss=loss)
        STEPS.tick(desc)
        resume.step_done(step + 1)
    stage.close()
    final = ema.module if ema is not None else model
    return {k: v.detach().cpu() for k, v in final.state_dict().items()}
