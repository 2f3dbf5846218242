"""Gaussian diffusion pieces the diffusion-based methods share (DDPM, MaskDM, and MDM's t/T).

Only what the probes need: noise schedules, forward noising, and the training targets of
REFERENCE §3-§4 (epsilon or x0, MSE or SSIM loss).
"""
from __future__ import annotations

import math

import torch
from pytorch_msssim import ssim

LINEAR_BETA_START = 1e-4   # at T = 1000, scaled by 1000 / T as in improved-diffusion
LINEAR_BETA_END = 0.02
COSINE_OFFSET = 0.008
MAX_BETA = 0.999


def betas_for(schedule: str, steps: int) -> torch.Tensor:
    """The beta schedule of improved/guided-diffusion ('linear' or 'cosine'), float64."""
    if schedule == "linear":
        scale = 1000 / steps
        return torch.linspace(scale * LINEAR_BETA_START, scale * LINEAR_BETA_END, steps, dtype=torch.float64)
    if schedule == "cosine":
        def alpha_bar(t: float) -> float:
            return math.cos((t + COSINE_OFFSET) / (1 + COSINE_OFFSET) * math.pi / 2) ** 2

        return torch.tensor([min(1 - alpha_bar((i + 1) / steps) / alpha_bar(i / steps), MAX_BETA)
                             for i in range(steps)], dtype=torch.float64)
    raise ValueError(f"unknown noise schedule {schedule!r}; expected linear or cosine")


class Schedule:
    """Cumulative products of a beta schedule, for noising x0 to x_t."""

    def __init__(self, schedule: str, steps: int) -> None:
        self.steps = steps
        self.alphas_cumprod = torch.cumprod(1 - betas_for(schedule, steps), dim=0)

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        ab = self.alphas_cumprod.to(x0.device)[t].float().view(-1, 1, 1, 1)
        return ab.sqrt() * x0 + (1 - ab).sqrt() * noise


def ssim_loss(pred: torch.Tensor, target: torch.Tensor, window: int = 5, sigma: float = 1.5) -> torch.Tensor:
    """(1 - SSIM) / 2 on images in [-1, 1] (MDM's loss: gaussian window 5, sigma 1.5)."""
    score = ssim((pred.float() + 1) / 2, (target.float() + 1) / 2, data_range=1.0, win_size=window,
                 win_sigma=sigma, size_average=True)
    return (1 - score) / 2


def reconstruction_loss(kind: str, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    if kind == "mse":
        return torch.mean((pred.float() - target.float()) ** 2)
    if kind == "ssim":
        return ssim_loss(pred, target)
    raise ValueError(f"unknown loss {kind!r}; expected mse or ssim")


def sample_timesteps(batch: int, steps: int, fixed_t: int | None, gen: torch.Generator) -> torch.Tensor:
    """t ~ Uniform{0..T-1}, or the fixed t of the ablations (Table 3)."""
    if fixed_t is not None:
        return torch.full((batch,), fixed_t, dtype=torch.long)
    return torch.randint(0, steps, (batch,), generator=gen)
