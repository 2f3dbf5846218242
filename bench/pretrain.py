"""The shared pre-training loop: random crops of the unlabelled pool, AdamW, optional EMA.

A method supplies only its loss on a batch; crops, flips, optimiser, EMA and progress are the
same for every backbone, so methods differ only where the papers differ. The schedule's
defaults are the plain loop (random crops, constant lr, weight decay on every parameter, an EMA
that starts after the first step); a method may ask for MAE's recipe (RandomResizedCrop, a
linear warm-up then half-cycle cosine lr per step, no weight decay on biases and norms) and
guided-diffusion's EMA (from the initial weights) or a warmed-up one. In a torch.distributed
group (bench/distributed.py) the same loop is data parallel: the model is wrapped in DDP, each
process trains on its shards of the global batch, and weights and EMA stay equal on every rank.
The loss curve is kept by the loop's `StageLog` (resumed with the loop) and handed to the
artefact (`collect_histories`).
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from bench import distributed
from bench.device import autocast, prepare_batch, retained_memory, to_device
from bench.imaging import resize_image, target_size, to_tensor
from bench.progress import SETTINGS, History, StageLog
from bench.resume import Stateful, loop_state
from bench.steptime import STEPS

StepLoss = Callable[[nn.Module, torch.Tensor, torch.Generator], torch.Tensor]
EMAStart = Literal["first_step", "initial"]
LRSchedule = Literal["constant", "warmup_cosine"]
CROP_RATIO = (3 / 4, 4 / 3)   # RandomResizedCrop's aspect-ratio range (torchvision's default, MAE's)
CROP_TRIES = 10               # torchvision's draws before it falls back to a centre crop
EMA_WARMUP_OFFSET = 10        # the warmed-up EMA's n-th decay: min(decay, (1 + n) / (10 + n))


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
    ema_start: EMAStart = "first_step"  # the EMA's first value: the weights after step 1 | the initial weights
    ema_warmup: bool = False        # the n-th average (n = averages taken) uses min(decay, (1 + n) / (10 + n))
    crop_scale: tuple[float, float] | None = None  # RandomResizedCrop's area range; None: plain crops
    lr_schedule: LRSchedule = "constant"
    warmup_steps: int = 0           # warmup_cosine: steps of the linear warm-up from 0
    min_lr: float = 0.0             # warmup_cosine: the lr the cosine ends at
    decay_exclusions: bool = False  # biases and 1-d parameters (norms) without weight decay


def lr_at(sched: PretrainSchedule, step: int) -> float:
    """The learning rate of step `step` (0-based), set before the step as MAE's per-iteration
    schedule does: linear from 0 over the warm-up, then a half cosine from lr to min_lr."""
    if sched.lr_schedule == "constant":
        return sched.lr
    if step < sched.warmup_steps:
        return sched.lr * step / sched.warmup_steps
    span = sched.steps - sched.warmup_steps
    progress = (step - sched.warmup_steps) / span if span > 0 else 0.0
    return sched.min_lr + (sched.lr - sched.min_lr) * 0.5 * (1 + math.cos(math.pi * progress))


def param_groups(model: nn.Module, weight_decay: float, exclusions: bool) -> list[dict[str, Any]]:
    """AdamW's parameter groups: one, or (exclusions) timm's split as MAE pre-training uses it
    (timm 0.3.2 `add_weight_decay`): trainable parameters that are 1-d or named `*.bias` get no
    weight decay, the rest `weight_decay` (MAE's cls and mask tokens, 1 x 1 x D, are decayed)."""
    if not exclusions:
        return [{"params": list(model.parameters()), "weight_decay": weight_decay}]
    plain: list[nn.Parameter] = []
    decayed: list[nn.Parameter] = []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (plain if p.ndim <= 1 or name.endswith(".bias") else decayed).append(p)
    return [{"params": plain, "weight_decay": 0.0}, {"params": decayed, "weight_decay": weight_decay}]


def build_ema(model: nn.Module, sched: PretrainSchedule) -> AveragedModel | None:
    """The schedule's EMA of `model`, or None. AveragedModel's first average copies the weights;
    under `ema_start = "initial"` that copy is taken here, before any step (guided-diffusion)."""
    if not sched.ema_decay:
        return None
    decay = sched.ema_decay
    fn = get_ema_multi_avg_fn(decay) if not sched.ema_warmup else _warmed_up_ema(decay)
    ema = AveragedModel(model, multi_avg_fn=fn)
    if sched.ema_start == "initial":
        ema.update_parameters(model)
    return ema


def _warmed_up_ema(decay: float) -> Callable[..., None]:
    @torch.no_grad()
    def update(ema_params: list[torch.Tensor], params: list[torch.Tensor], averaged: torch.Tensor) -> None:
        n = int(averaged)
        torch._foreach_lerp_(ema_params, params, 1 - min(decay, (1 + n) / (EMA_WARMUP_OFFSET + n)))

    return update


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


def _uniform(low: float, high: float, gen: torch.Generator) -> float:
    return low + (high - low) * float(torch.rand((), generator=gen, dtype=torch.float64))


def resized_crop_box(h: int, w: int, scale: tuple[float, float], gen: torch.Generator,
                     ratio: tuple[float, float] = CROP_RATIO) -> tuple[int, int, int, int]:
    """(top, left, height, width) of torchvision's RandomResizedCrop: an area fraction uniform in
    `scale` and a log-uniform aspect ratio, up to 10 tries to fit, else the whole image centre-
    cropped to the nearest allowed ratio."""
    area = h * w
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(CROP_TRIES):
        target = area * _uniform(scale[0], scale[1], gen)
        aspect = math.exp(_uniform(log_ratio[0], log_ratio[1], gen))
        cw, ch = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            top = int(torch.randint(h - ch + 1, (1,), generator=gen))
            left = int(torch.randint(w - cw + 1, (1,), generator=gen))
            return top, left, ch, cw
    if w / h < min(ratio):
        cw, ch = w, int(round(w / min(ratio)))
    elif w / h > max(ratio):
        cw, ch = int(round(h * max(ratio))), h
    else:
        cw, ch = w, h
    return (h - ch) // 2, (w - cw) // 2, ch, cw


def crop_batch(pool: list[torch.Tensor], size: int, batch: int, hflip: bool, gen: torch.Generator,
               keep: range | None = None, scale: tuple[float, float] | None = None) -> torch.Tensor:
    """`batch` random crops (crops outside `keep` are drawn, so `gen` advances alike, but not cut).

    With `scale`, RandomResizedCrop instead: a box of `resized_crop_box` resized to size x size
    (bicubic with antialiasing, as PIL resizes for torchvision; clamped to [-1, 1]).
    """
    if scale is not None:
        return _resized_crops(pool, size, batch, hflip, gen, keep, scale)
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


def _resized_crops(pool: list[torch.Tensor], size: int, batch: int, hflip: bool, gen: torch.Generator,
                   keep: range | None, scale: tuple[float, float]) -> torch.Tensor:
    out = []
    for i in range(batch):
        x = pool[int(torch.randint(len(pool), (1,), generator=gen))]
        top, left, ch, cw = resized_crop_box(x.shape[-2], x.shape[-1], scale, gen)
        flip = hflip and bool(torch.rand((), generator=gen) < 0.5)
        if keep is not None and i not in keep:
            continue
        box = x[None, :, top : top + ch, left : left + cw]
        y = F.interpolate(box, size=(size, size), mode="bicubic", align_corners=False, antialias=True)
        y = y[0].clamp(-1, 1)
        out.append(y.flip(-1) if flip else y)
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
        yield crop_batch(pool, sched.crop, sched.batch, sched.hflip, gen, scale=sched.crop_scale), gen
        return
    n = shards.size
    crops = crop_batch(pool, sched.crop, sched.batch, sched.hflip, gen, range(shards.mine.start * n, shards.mine.stop * n),
                       scale=sched.crop_scale)
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
    opt = torch.optim.AdamW(param_groups(model, sched.weight_decay, sched.decay_exclusions), lr=sched.lr,
                            weight_decay=sched.weight_decay, betas=sched.betas)
    ema = build_ema(model, sched)
    stateful_loss = step_loss if isinstance(step_loss, Stateful) else None  # e.g. a queue it keeps
    history = History(SETTINGS.max_points)
    resume = loop_state({"model": model, "opt": opt, "ema": ema, "loss": stateful_loss, "history": history},
                        gen, sched.steps)
    stage = StageLog(desc, sched.steps, progress and distributed.layout().main, initial=resume.start,
                     history=history)
    parts = len(shards.mine)
    STEPS.start(desc)
    for step in range(resume.start, sched.steps):
        if sched.lr_schedule != "constant":
            for group in opt.param_groups:
                group["lr"] = lr_at(sched, step)
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
