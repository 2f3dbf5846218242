"""The shared pre-training loop: random crops of the unlabelled pool, AdamW, optional EMA.

A method supplies only its loss on a batch; crops, flips, optimiser, EMA and progress are the
same for every backbone, so methods differ only where the papers differ.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm.auto import tqdm

from bench.device import autocast, prepare_batch, to_device
from bench.executors.resume import loop_state
from bench.imaging import resize_image, target_size, to_tensor
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


def working_pool(images: list[np.ndarray], max_side: int | None) -> list[torch.Tensor]:
    """The unlabelled pool as 3 x H x W tensors in [-1, 1] at the preset's working size."""
    return [resize_image(to_tensor(im), target_size(im.shape[:2], max_side))[0] * 2 - 1 for im in images]


def crop_batch(pool: list[torch.Tensor], size: int, batch: int, hflip: bool, gen: torch.Generator) -> torch.Tensor:
    out = []
    for _ in range(batch):
        x = pool[int(torch.randint(len(pool), (1,), generator=gen))]
        h, w = x.shape[-2:]
        if h < size or w < size:
            x = torch.nn.functional.pad(x, (0, max(0, size - w), 0, max(0, size - h)), mode="reflect" if min(h, w) > size // 2 else "constant")
            h, w = x.shape[-2:]
        top = int(torch.randint(h - size + 1, (1,), generator=gen))
        left = int(torch.randint(w - size + 1, (1,), generator=gen))
        x = x[:, top : top + size, left : left + size]
        if hflip and torch.rand((), generator=gen) < 0.5:
            x = x.flip(-1)
        out.append(x)
    return torch.stack(out)


def pretrain(model: nn.Module, images: list[np.ndarray], sched: PretrainSchedule, step_loss: StepLoss,
             device: torch.device, seed: int, progress: bool = False, desc: str = "pretrain") -> dict[str, torch.Tensor]:
    """Train `model` with `step_loss`; return the (EMA) state dict on the CPU."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    pool = working_pool(images, sched.max_side)
    model = to_device(model, device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=sched.lr, weight_decay=sched.weight_decay, betas=sched.betas)
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(sched.ema_decay)) if sched.ema_decay else None
    stateful_loss = step_loss if hasattr(step_loss, "load_state_dict") else None  # e.g. a queue it keeps
    resume = loop_state({"model": model, "opt": opt, "ema": ema, "loss": stateful_loss}, gen, sched.steps)
    bar = tqdm(range(resume.start, sched.steps), desc=desc, leave=False, disable=not progress,
               initial=resume.start, total=sched.steps)
    STEPS.start(desc)
    for step in bar:
        x = prepare_batch(crop_batch(pool, sched.crop, sched.batch, sched.hflip, gen), device)
        with autocast(device):
            loss = step_loss(model, x, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if sched.grad_clip:
            nn.utils.clip_grad_norm_(model.parameters(), sched.grad_clip)
        opt.step()
        if ema is not None:
            ema.update_parameters(model)
        bar.set_postfix(loss=f"{loss.item():.4f}")
        STEPS.tick(desc)
        resume.step_done(step + 1)
    final = ema.module if ema is not None else model
    return {k: v.detach().cpu() for k, v in final.state_dict().items()}
