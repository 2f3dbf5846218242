"""Gaussian diffusion pieces the diffusion-based methods share (DDPM, MaskDM, and MDM's t/T).

Only what the probes need: noise schedules, forward noising, the posterior q(x_{t-1} | x_t, x0)
(for the variational-bound term of bench.diffusion_vlb), and the training targets of
REFERENCE §3-§4 (epsilon or x0, MSE or SSIM loss).
"""
from __future__ import annotations

import math
from typing import Literal

import torch
from pytorch_msssim import ssim

from bench.ssim import ssim_loss_torchgeometry

SSIMKind = Literal["pytorch_msssim", "torchgeometry"]
SSIM_KINDS: tuple[str, ...] = ("pytorch_msssim", "torchgeometry")

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
    """Cumulative products of a beta schedule, for noising x0 to x_t, and the Gaussian posterior
    q(x_{t-1} | x_t, x0) (float64, as improved/guided-diffusion compute them)."""

    def __init__(self, schedule: str, steps: int) -> None:
        self.steps = steps
        self.betas = betas_for(schedule, steps)
        self.alphas_cumprod = torch.cumprod(1 - self.betas, dim=0)
        ac, betas = self.alphas_cumprod, self.betas
        ac_prev = torch.cat([torch.ones(1, dtype=torch.float64), ac[:-1]])
        self.posterior_variance = betas * (1 - ac_prev) / (1 - ac)
        # The posterior variance is 0 at t = 0: its log takes the value at t = 1 there.
        self.posterior_log_variance_clipped = torch.log(
            torch.cat([self.posterior_variance[1:2], self.posterior_variance[1:]]))
        self.posterior_mean_coef_x0 = betas * ac_prev.sqrt() / (1 - ac)
        self.posterior_mean_coef_xt = (1 - ac_prev) * (1 - betas).sqrt() / (1 - ac)

    def at(self, values: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """values[t] as float32 on `like`'s device, shaped to broadcast over B x C x H x W."""
        return values.to(like.device)[t].float().view(-1, *([1] * (like.ndim - 1)))

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        ab = self.alphas_cumprod.to(x0.device)[t].float().view(-1, 1, 1, 1)
        return ab.sqrt() * x0 + (1 - ab).sqrt() * noise


def ssim_loss(pred: torch.Tensor, target: torch.Tensor, window: int = 5, sigma: float = 1.5,
              kind: str = "pytorch_msssim") -> torch.Tensor:
    """An SSIM loss on images in [-1, 1] with a gaussian window 5, sigma 1.5 (MDM's loss).

    `pytorch_msssim`: (1 - SSIM) / 2 of the mean SSIM of the images rescaled to [0, 1], over the
    windows inside the image. `torchgeometry`: MDM's official loss as it computes it
    (bench.ssim: zero padding, max_val 1 on the [-1, 1] images, per-pixel clamp).
    """
    if kind == "torchgeometry":
        return ssim_loss_torchgeometry(pred, target, window, sigma)
    if kind != "pytorch_msssim":
        raise ValueError(f"unknown SSIM {kind!r}; expected one of {SSIM_KINDS}")
    score = ssim((pred.float() + 1) / 2, (target.float() + 1) / 2, data_range=1.0, win_size=window,
                 win_sigma=sigma, size_average=True)
    return (1 - score) / 2


def reconstruction_loss(kind: str, pred: torch.Tensor, target: torch.Tensor,
                        ssim_kind: str = "pytorch_msssim") -> torch.Tensor:
    if kind == "mse":
        return torch.mean((pred.float() - target.float()) ** 2)
    if kind == "ssim":
        return ssim_loss(pred, target, kind=ssim_kind)
    raise ValueError(f"unknown loss {kind!r}; expected mse or ssim")


def sample_timesteps(batch: int, steps: int, fixed_t: int | None, gen: torch.Generator) -> torch.Tensor:
    """t ~ Uniform{0..T-1}, or the fixed t of the ablations (Table 3)."""
    if fixed_t is not None:
        return torch.full((batch,), fixed_t, dtype=torch.long)
    return torch.randint(0, steps, (batch,), generator=gen)
