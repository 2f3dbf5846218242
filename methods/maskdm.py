"""MaskDM (REFERENCE §7): masked diffusion pre-training of a U-ViT, then fine-tuning as a DDPM.

Stage 1 noises the image as DDPM does but shows the transformer only ~10% of the patch tokens
(whole blocks of patches are dropped) and scores epsilon on those patches alone; stage 2 trains
the same network as a plain DDPM (no mask). Features are read like ddpm's: a noised input at
fixed timesteps, the outputs of chosen out_blocks as maps on the patch grid.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal, cast

import numpy as np
import torch
from torch import nn

from bench.context import RunContext
from bench.diffusion import Schedule, reconstruction_loss, sample_timesteps
from bench.errors import FieldError
from bench.limits import NON_NEGATIVE, POSITIVE, UNIT, Limit, Rule, non_negative
from bench.nn.uvit import UViT, UViTArch, block_keep_indices, keep_pixel_mask, visible_mse
from bench.pretrain import PretrainSchedule, StepLoss, pretrain
from bench.registry import register
from bench.ssl import SMALL_PROBE, TINY_PROBE, SSLConfig, SSLMethod


@dataclass(frozen=True)
class MaskDMConfig(SSLConfig):
    """U-ViT at 256 px, patch 4, dim 768, depth 12, 12 heads; MaskDM's two-stage recipe (§7).

    §7 gives no iteration counts for segmentation pre-training; the 10,000 + 10,000 steps here
    follow the 10,000 DDPM iterations of §4 and are our choice.
    """

    patch: int = 4
    embed_dim: int = 768
    depth: int = 12
    heads: int = 12
    mlp_ratio: float = 4.0
    schedule: Literal["cosine", "linear"] = "cosine"
    diffusion_steps: int = 1000
    mask_ratio: float = 0.9            # stage 1: fraction of mask blocks dropped
    mask_block: int = 4                # a mask block is mask_block x mask_block patches
    stage1_steps: int = 10000          # 0: no masked pre-training (plain DDPM of the U-ViT)
    stage1_batch: int = 256
    stage1_lr: float = 2e-4
    stage2_steps: int = 10000
    stage2_batch: int = 64
    stage2_lr: float = 5e-5
    betas: tuple[float, float] = (0.99, 0.99)
    weight_decay: float = 0.03
    ema_decay: float = 0.999
    grad_clip: float = 1.0
    hflip: bool = True
    blocks_medical: tuple[int, ...] = (1, 2, 3, 4)    # out_blocks read out (0 = nearest the mid block)
    blocks_natural: tuple[int, ...] = (1, 2, 3, 4)
    timesteps_medical: tuple[int, ...] = (250,)
    timesteps_natural: tuple[int, ...] = (50, 150, 250)
    noise_seed: int = 0

    LIMITS: ClassVar[dict[str, Rule]] = {
        "patch": POSITIVE, "embed_dim": POSITIVE, "depth": POSITIVE, "heads": POSITIVE, "mlp_ratio": POSITIVE,
        "diffusion_steps": POSITIVE, "mask_ratio": UNIT, "mask_block": POSITIVE,
        "stage1_steps": non_negative(note="0: no masked pre-training (a plain DDPM of the U-ViT)"),
        "stage1_batch": POSITIVE, "stage1_lr": POSITIVE,
        "stage2_steps": non_negative(note="0: no DDPM fine-tuning; both 0: the untrained U-ViT (Figure 7)"),
        "stage2_batch": POSITIVE, "stage2_lr": POSITIVE, "betas": UNIT, "weight_decay": NON_NEGATIVE,
        "ema_decay": Limit(0, 1, high_open=True, note="0: no EMA"), "grad_clip": non_negative(note="0: no clipping"),
        "blocks_medical": non_negative(min_len=1), "blocks_natural": non_negative(min_len=1),
        "timesteps_medical": non_negative(min_len=1), "timesteps_natural": non_negative(min_len=1),
        "noise_seed": NON_NEGATIVE,
    }

    def __post_init__(self) -> None:
        """Fail at config time on settings the U-ViT or the mask cannot honour."""
        super().__post_init__()
        c = self
        if c.window % c.patch:
            raise FieldError("window", f"{c.window} is not a multiple of patch {c.patch}")
        if (c.window // c.patch) % c.mask_block:
            raise FieldError("mask_block", f"the {c.window // c.patch}-patch grid is not a multiple of {c.mask_block}")
        if c.depth % 2 or c.depth < 2:
            raise FieldError("depth", f"must be even and at least 2 (in + out blocks), got {c.depth}")
        if c.embed_dim % c.heads:
            raise FieldError("heads", f"embed_dim {c.embed_dim} is not divisible by {c.heads} heads")
        for key in ("blocks_medical", "blocks_natural"):
            blocks = getattr(c, key)
            if not all(0 <= b < c.depth // 2 for b in blocks):
                raise FieldError(key, f"out_blocks indices must be in 0..{c.depth // 2 - 1}, got {blocks}")
        for key in ("timesteps_medical", "timesteps_natural"):
            if not all(0 <= t < c.diffusion_steps for t in getattr(c, key)):
                raise FieldError(key, f"timesteps must be in 0..{c.diffusion_steps - 1}")


# A 64 px U-ViT (patch 4: a 16 x 16 grid, 2 x 2-patch mask blocks) small enough for a 2-core CPU.
TINY_UVIT: dict[str, Any] = dict(
    embed_dim=64, depth=4, heads=4, mask_block=2, stage1_steps=60, stage1_batch=16, stage1_lr=1e-3,
    stage2_steps=60, stage2_batch=8, stage2_lr=1e-3, betas=(0.9, 0.99), ema_decay=0.0,
    blocks_medical=(0, 1), blocks_natural=(0, 1), timesteps_natural=(50, 150),
)


# A 128 px U-ViT (patch 8: a 16 x 16 grid, 2 x 2-patch mask blocks) for the `small` preset.
SMALL_UVIT: dict[str, Any] = dict(
    patch=8, embed_dim=128, depth=6, heads=4, mask_block=2, stage1_steps=400, stage1_batch=16,
    stage1_lr=5e-4, stage2_steps=400, stage2_batch=8, stage2_lr=2e-4, betas=(0.9, 0.99),
    ema_decay=0.995, blocks_medical=(0, 1, 2), blocks_natural=(0, 1, 2),
)


@register("maskdm", "ssl")
class MaskDM(SSLMethod):
    """MaskDM: a U-ViT pre-trained as a masked diffusion model, fine-tuned as a DDPM, read like ddpm."""

    Config = MaskDMConfig
    probe_only_fields = ("blocks_medical", "blocks_natural", "timesteps_medical", "timesteps_natural", "noise_seed")
    presets = {
        "tiny": MaskDMConfig(**TINY_PROBE, **TINY_UVIT),
        "small": MaskDMConfig(**SMALL_PROBE, **SMALL_UVIT),
        "paper": MaskDMConfig(protocol="official"),
    }

    def arch(self) -> UViTArch:
        c = self.cfg
        return UViTArch(img_size=c.window, patch=c.patch, embed_dim=c.embed_dim, depth=c.depth,
                        heads=c.heads, mlp_ratio=c.mlp_ratio)

    def build_model(self, num_classes: int = 2) -> nn.Module:
        return UViT(self.arch())

    # --- pre-training --------------------------------------------------------------------
    def stage_schedule(self, stage: int) -> PretrainSchedule:
        c = self.cfg
        steps, batch, lr = ((c.stage1_steps, c.stage1_batch, c.stage1_lr) if stage == 1
                            else (c.stage2_steps, c.stage2_batch, c.stage2_lr))
        return PretrainSchedule(steps=steps, batch=batch, crop=c.window, lr=lr, weight_decay=c.weight_decay,
                                betas=c.betas, ema_decay=c.ema_decay, grad_clip=c.grad_clip,
                                max_side=c.max_side, hflip=c.hflip)

    def step_loss(self, mask_ratio: float) -> StepLoss:
        """Epsilon-prediction loss; with a mask, only kept tokens go in and only they are scored."""
        c, grid = self.cfg, self.cfg.window // self.cfg.patch
        sched = Schedule(c.schedule, c.diffusion_steps)

        def loss(model: nn.Module, x0: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
            t = sample_timesteps(x0.shape[0], c.diffusion_steps, None, gen).to(x0.device)
            noise = torch.randn(x0.shape, generator=gen).to(x0.device, x0.dtype)
            x_t = sched.q_sample(x0, t, noise)
            if mask_ratio == 0:
                return reconstruction_loss("mse", model(x_t, t), noise)
            keep = block_keep_indices(x0.shape[0], grid, c.mask_block, mask_ratio, gen).to(x0.device)
            return visible_mse(model(x_t, t, keep), noise, keep_pixel_mask(keep, grid, c.patch))

        return loss

    def pretrain(self, images: list[np.ndarray], ctx: RunContext) -> dict[str, Any]:
        """Stage 1 (masked) then stage 2 (unmasked) from stage 1's weights; returns the final weights.

        Either stage may have 0 steps: stage1_steps=0 is plain DDPM training of the same U-ViT (the
        ablation), and 0 + 0 leaves the initial weights (the untrained baseline of the benchmark).
        """
        c = self.cfg
        model = self.build_model()
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        for stage, ratio in ((1, c.mask_ratio), (2, 0.0)):
            sched = self.stage_schedule(stage)
            if sched.steps == 0:
                continue
            model.load_state_dict(state)
            state = pretrain(model, images, sched, self.step_loss(ratio), ctx.device,
                             c.pretrain_seed + stage - 1, ctx.progress, desc=_stage_name(stage))
        return state

    def schedules(self) -> dict[str, PretrainSchedule]:
        return {_stage_name(s): self.stage_schedule(s) for s in (1, 2) if self.stage_schedule(s).steps}

    # --- features ------------------------------------------------------------------------
    def blocks_and_timesteps(self, domain: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
        c = self.cfg
        if domain == "medical":
            return c.blocks_medical, c.timesteps_medical
        return c.blocks_natural, c.timesteps_natural

    def extract(self, backbone: nn.Module, x: torch.Tensor, domain: str) -> list[torch.Tensor]:
        """Out-block maps of the noised window at each timestep; one noise draw shared by all windows."""
        blocks, timesteps = self.blocks_and_timesteps(domain)
        sched = Schedule(self.cfg.schedule, self.cfg.diffusion_steps)
        x = x * 2 - 1
        noise = self.extraction_noise(x)
        maps: list[torch.Tensor] = []
        for step in timesteps:
            t = torch.full((x.shape[0],), step, dtype=torch.long, device=x.device)
            maps.extend(cast(UViT, backbone).features(sched.q_sample(x, t, noise), t, blocks))
        return maps


def _stage_name(stage: int) -> str:
    return f"maskdm stage {stage}"
