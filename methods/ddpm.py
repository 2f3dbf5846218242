"""DDPM (Baranchuk et al.): denoising diffusion pre-training, decoder features of noised images."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch import nn

from bench.context import RunContext
from bench.diffusion import Schedule, reconstruction_loss, sample_timesteps
from bench.diffusion_probe import SMALL_UNET, TINY_UNET, DiffusionConfig, DiffusionProbe
from bench.diffusion_vlb import vlb_bits
from bench.errors import FieldError
from bench.limits import NON_NEGATIVE, Rule
from bench.pretrain import pretrain
from bench.registry import register
from bench.ssl import SMALL_PROBE, TINY_PROBE


@dataclass(frozen=True)
class DDPMConfig(DiffusionConfig):
    schedule: Literal["cosine", "linear"] = "cosine"   # cosine (medical) | linear (FFHQ)
    target: Literal["eps", "x0"] = "eps"               # Table 4
    loss: Literal["mse", "ssim"] = "mse"               # ssim: x0 target only
    fixed_t: int | None = None        # Table 3: train at one timestep (a denoising autoencoder)
    # What trains the learned sigma (learn_sigma's second three output channels): none (they get
    # no gradient) | vlb (guided-diffusion's hybrid loss: + the variational bound's term at t,
    # bench.diffusion_vlb, with the mean's gradient stopped).
    variance_loss: Literal["none", "vlb"] = "none"

    # Protocol "official": guided-diffusion's learned-sigma DDPM and its hybrid loss (REFERENCE §4).
    OFFICIAL: ClassVar[dict[str, Any]] = dict(learn_sigma=True, variance_loss="vlb")
    LEGACY: ClassVar[dict[str, Any]] = dict(variance_loss="none")

    LIMITS: ClassVar[dict[str, Rule]] = {"fixed_t": NON_NEGATIVE}

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.variance_loss == "vlb" and not self.learn_sigma:
            raise FieldError("variance_loss", "'vlb' trains the learned variance: it needs learn_sigma = true")
        if self.target == "eps" and self.loss != "mse":
            raise FieldError("loss", f"the eps target is scored with mse; {self.loss} needs target = \"x0\"")
        if self.fixed_t is not None and self.fixed_t >= self.diffusion_steps:
            raise FieldError("fixed_t", f"must be in 0..{self.diffusion_steps - 1}, got {self.fixed_t}")


@register("ddpm", "ssl")
class DDPM(DiffusionProbe):
    """DDPM pixel features (Baranchuk et al.): a diffusion UNet read out at noised timesteps."""

    Config = DDPMConfig
    presets = {
        "tiny": DDPMConfig(**TINY_PROBE, **TINY_UNET, timesteps_natural=(50, 150)),
        "small": DDPMConfig(**SMALL_PROBE, **SMALL_UNET),
        # guided-diffusion's hybrid loss; the EMA and SSIM as mdm's paper preset.
        "paper": DDPMConfig(protocol="official", variance_loss="vlb", ema_warmup=True, ssim="torchgeometry"),
    }

    def pretrain(self, images: list[np.ndarray], ctx: RunContext) -> dict[str, Any]:
        c = self.cfg
        sched = Schedule(c.schedule, c.diffusion_steps)

        def step_loss(model: nn.Module, x0: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
            t = sample_timesteps(x0.shape[0], c.diffusion_steps, c.fixed_t, gen).to(x0.device)
            noise = torch.randn(x0.shape, generator=gen).to(x0.device)
            x_t = sched.q_sample(x0, t, noise)
            full = model(x_t, t)
            out = full[:, :3]
            if c.target == "eps":
                loss = reconstruction_loss("mse", out, noise)
            else:
                loss = reconstruction_loss(c.loss, out, x0, c.ssim)
            if c.variance_loss == "vlb":
                loss = loss + vlb_bits(sched, x0, x_t, t, out, full[:, 3:6], c.target).mean()
            return loss

        return pretrain(self.build_model(), images, self.schedule(), step_loss, ctx.device,
                        c.pretrain_seed, ctx.progress, desc="ddpm pretrain")

    def model_input(self, x: torch.Tensor, t: int, noise: torch.Tensor) -> torch.Tensor:
        sched = Schedule(self.cfg.schedule, self.cfg.diffusion_steps)
        return sched.q_sample(x, torch.full((x.shape[0],), t, dtype=torch.long, device=x.device), noise)
