"""MDM (Pan, Chen, Shi): masked diffusion, features of a UNet that restores masked patches."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch import nn

from bench.context import RunContext
from bench.diffusion import reconstruction_loss, sample_timesteps
from bench.diffusion_probe import SMALL_UNET, TINY_UNET, DiffusionConfig, DiffusionProbe
from bench.errors import FieldError
from bench.limits import NON_NEGATIVE, POSITIVE, Rule
from bench.nn.masking import mask_patches, patch_keep_mask
from bench.pretrain import pretrain
from bench.registry import register
from bench.ssl import SMALL_PROBE, TINY_PROBE


@dataclass(frozen=True)
class MDMConfig(DiffusionConfig):
    patch: int = 8                     # 4 and 16 are the Table 7 ablation
    loss: Literal["ssim", "mse"] = "ssim"  # Table 4
    fixed_t: int | None = None         # Table 3: always mask t / T of the patches
    learn_sigma: bool = False
    ema_decay: float = 0.9999
    train_batch: int = 128
    blocks_natural: tuple[int, ...] = (5, 6, 7, 8, 9, 10, 11, 12)
    timesteps_medical: tuple[int, ...] = (50,)
    timesteps_natural: tuple[int, ...] = (50,)

    LIMITS: ClassVar[dict[str, Rule]] = {"patch": POSITIVE, "fixed_t": NON_NEGATIVE}

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.window % self.patch:
            raise FieldError("patch", f"window {self.window} is not a multiple of patch {self.patch}")
        if self.fixed_t is not None and self.fixed_t >= self.diffusion_steps:
            raise FieldError("fixed_t", f"must be in 0..{self.diffusion_steps - 1}, got {self.fixed_t}")


@register("mdm", "ssl")
class MDM(DiffusionProbe):
    """MDM: a diffusion UNet trained to restore images with t/T of their patches masked (SSIM loss)."""

    Config = MDMConfig
    presets = {
        "tiny": MDMConfig(**TINY_PROBE, **TINY_UNET),
        "small": MDMConfig(**SMALL_PROBE, **SMALL_UNET),
        # The paper's MDM: torchgeometry's SSIM; under protocol "converged" a warmed-up EMA
        # (docs/official-protocol.md, "Method details"), under "official" guided-diffusion's.
        "paper": MDMConfig(protocol="official", ssim="torchgeometry", ema_warmup=True),
    }

    def pretrain(self, images: list[np.ndarray], ctx: RunContext) -> dict[str, Any]:
        c = self.cfg

        def step_loss(model: nn.Module, x0: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
            t = sample_timesteps(x0.shape[0], c.diffusion_steps, c.fixed_t, gen)
            masked = mask_patches(x0, t, c.diffusion_steps, c.patch, gen)
            restored = model(masked, t.to(x0.device))
            return reconstruction_loss(c.loss, restored, x0, c.ssim)

        return pretrain(self.build_model(), images, self.schedule(), step_loss, ctx.device,
                        c.pretrain_seed, ctx.progress, desc="mdm pretrain")

    def model_input(self, x: torch.Tensor, t: int, noise: torch.Tensor) -> torch.Tensor:
        """The training corruption at t: one mask from the fixed extraction seed for every window,
        or under the official protocol's draws a fresh mask per window (drawn anew each time)."""
        c = self.cfg
        fresh = self.draws is not None
        gen = self.draws.gen if self.draws is not None else torch.Generator().manual_seed(c.noise_seed)
        n = x.shape[0] if fresh else 1
        keep = patch_keep_mask(n, (x.shape[-2], x.shape[-1]), c.patch, torch.full((n,), t / c.diffusion_steps), gen)
        return x * keep.to(x.device, x.dtype)
