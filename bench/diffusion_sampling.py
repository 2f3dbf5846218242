"""Ancestral (DDPM) sampling over bench's noise schedules, with timestep respacing.

The reverse process of improved/guided-diffusion: at each used timestep the model predicts
epsilon (or x0), x0 is clipped to [-1, 1], and x_{t-1} is drawn from the Gaussian posterior
q(x_{t-1} | x_t, x0) with a fixed or a learned variance. Respacing (Nichol & Dhariwal, §4)
keeps a subset S of the T training timesteps and recomputes the betas between them, so short
presets sample in tens of steps; the network is still called with the original timestep index.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from bench.diffusion import betas_for

VARIANCES = ("fixed_large", "fixed_small", "learned")
TARGETS = ("eps", "x0")


def spaced_timesteps(total: int, count: int) -> list[int]:
    """`count` timesteps spread evenly over 0..total-1 (always both ends), ascending."""
    if not 1 <= count <= total:
        raise ValueError(f"sampling steps must be in 1..{total}, got {count}")
    if count == 1:
        return [total - 1]
    return sorted({round(i * (total - 1) / (count - 1)) for i in range(count)})


@dataclass(frozen=True)
class SamplerConfig:
    schedule: str = "linear"
    diffusion_steps: int = 1000
    sample_steps: int = 1000          # < diffusion_steps: respaced
    variance: str = "fixed_large"     # fixed_large (sigma^2 = beta) | fixed_small (posterior) | learned
    target: str = "eps"               # what the model predicts: eps | x0
    clip_denoised: bool = True

    def __post_init__(self) -> None:
        if self.variance not in VARIANCES:
            raise ValueError(f"unknown sampling variance {self.variance!r}; expected one of {VARIANCES}")
        if self.target not in TARGETS:
            raise ValueError(f"unknown model target {self.target!r}; expected one of {TARGETS}")


class AncestralSampler:
    """p(x_{t-1} | x_t) over the (respaced) timesteps of a trained diffusion model."""

    def __init__(self, cfg: SamplerConfig) -> None:
        self.cfg = cfg
        full = torch.cumprod(1 - betas_for(cfg.schedule, cfg.diffusion_steps), dim=0)
        self.timesteps = spaced_timesteps(cfg.diffusion_steps, cfg.sample_steps)
        ac = full[self.timesteps]
        ac_prev = torch.cat([torch.ones(1, dtype=torch.float64), ac[:-1]])
        betas = 1 - ac / ac_prev
        self.alphas_cumprod, self.betas = ac, betas
        post_var = betas * (1 - ac_prev) / (1 - ac)
        # guided-diffusion: log variance clipped at t=0 (the posterior variance there is 0).
        self.post_log_var = torch.log(torch.cat([post_var[1:2], post_var[1:]]))
        self.large_log_var = torch.log(torch.cat([post_var[1:2], betas[1:]]))
        self.coef_x0 = betas * ac_prev.sqrt() / (1 - ac)
        self.coef_xt = (1 - ac_prev) * (1 - betas).sqrt() / (1 - ac)

    def _at(self, values: torch.Tensor, i: int, like: torch.Tensor) -> torch.Tensor:
        return values[i].to(device=like.device, dtype=torch.float32)

    @torch.no_grad()
    def p_sample(self, model: nn.Module, x: torch.Tensor, i: int, noise: torch.Tensor) -> torch.Tensor:
        """One reverse step from index i of the used timesteps (x at timestep timesteps[i])."""
        c = self.cfg
        t = torch.full((x.shape[0],), self.timesteps[i], dtype=torch.long, device=x.device)
        out = model(x, t).float()
        pred = out[:, :3]
        if c.target == "eps":
            ac = self._at(self.alphas_cumprod, i, x)
            x0 = (x - (1 - ac).sqrt() * pred) / ac.sqrt()
        else:
            x0 = pred
        if c.clip_denoised:
            x0 = x0.clamp(-1, 1)
        mean = self._at(self.coef_x0, i, x) * x0 + self._at(self.coef_xt, i, x) * x
        if i == 0:
            return mean
        if c.variance == "learned":
            if out.shape[1] < 6:
                raise ValueError("variance = 'learned' needs a model with learn_sigma (6 output channels)")
            frac = (out[:, 3:6] + 1) / 2
            log_var = (frac * torch.log(self._at(self.betas, i, x))
                       + (1 - frac) * self._at(self.post_log_var, i, x))
        else:
            log_var = self._at(self.large_log_var if c.variance == "fixed_large" else self.post_log_var, i, x)
        return mean + torch.exp(0.5 * log_var) * noise

    @torch.no_grad()
    def sample(self, model: nn.Module, shape: tuple[int, ...], gen: torch.Generator,
               device: torch.device, progress: bool = False, desc: str = "sampling") -> torch.Tensor:
        """x_0 in [-1, 1] from x_T ~ N(0, I); every random draw comes from `gen` (on the CPU), so
        a batch is the same on any device for the same generator state."""
        x = torch.randn(shape, generator=gen).to(device)
        steps = range(len(self.timesteps) - 1, -1, -1)
        for i in tqdm(steps, desc=desc, leave=False, disable=not progress, unit="step"):
            noise = torch.randn(shape, generator=gen).to(device) if i > 0 else torch.zeros(shape, device=device)
            x = self.p_sample(model, x, i, noise)
        return x.clamp(-1, 1)
