"""What the diffusion-UNet probes (ddpm, mdm, maskdm's fine-tuned stage) have in common.

They share the guided-diffusion UNet (bench.nn.gd_unet), its pre-training loop, and the read-out
of decoder blocks `output_blocks[i]` at chosen timesteps through forward hooks. The forward pass
stops right after the deepest block needed, so unused decoder blocks cost nothing.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, cast

import torch
from torch import nn

from bench.diffusion import SSIMKind
from bench.errors import ConfigError, FieldError
from bench.limits import NON_NEGATIVE, POSITIVE, UNIT, Limit, Rule, non_negative, positive
from bench.nn.early_exit import capture
from bench.nn.gd_unet import GDUNet, GDUNetConfig
from bench.pretrain import EMAStart, PretrainSchedule
from bench.ssl import SSLConfig, SSLMethod

# The read-out knobs: which decoder blocks, at which timesteps, under which noise draw.
READOUT_FIELDS = ("blocks_medical", "blocks_natural", "timesteps_medical", "timesteps_natural", "noise_seed")


@dataclass(frozen=True)
class DiffusionConfig(SSLConfig):
    """The guided-diffusion UNet (REFERENCE §3), its training, and which features to read out."""

    model_channels: int = 192
    channel_mult: tuple[int, ...] = (1, 1, 2, 2, 4, 4)
    num_res_blocks: int = 2
    attention_resolutions: tuple[int, ...] = (32, 16, 8)
    num_head_channels: int = 64
    dropout: float = 0.0
    learn_sigma: bool = True
    use_scale_shift_norm: bool = True
    resblock_updown: bool = True
    diffusion_steps: int = 1000
    train_steps: int = 10000
    train_batch: int = 32
    lr: float = 1e-4
    ema_decay: float = 0.9999
    ema_start: EMAStart = "first_step"  # the EMA's first value: the weights after step 1 | the initial weights
    ema_warmup: bool = False           # the n-th average uses min(ema_decay, (1 + n) / (10 + n))
    ssim: SSIMKind = "pytorch_msssim"  # which SSIM the SSIM losses compute (bench.diffusion.ssim_loss)
    blocks_medical: tuple[int, ...] = (8, 9, 10, 11, 12)
    blocks_natural: tuple[int, ...] = (5, 6, 7, 8, 12)
    timesteps_medical: tuple[int, ...] = (250,)
    timesteps_natural: tuple[int, ...] = (50, 150, 250)
    noise_seed: int = 0

    # The official code (guided-diffusion's TrainLoop, MDM's torchgeometry loss; docs/official-protocol.md,
    # "Method details"): the EMA starts from the initial weights at a constant decay, SSIM as
    # torchgeometry computes it. The decay itself is the preset's (the paper's 0.9999 at paper size).
    OFFICIAL: ClassVar[dict[str, Any]] = dict(ema_start="initial", ema_warmup=False, ssim="torchgeometry")
    LEGACY: ClassVar[dict[str, Any]] = dict(ema_start="first_step", ema_warmup=False, ssim="pytorch_msssim")
    LIMITS: ClassVar[dict[str, Rule]] = {
        "model_channels": POSITIVE, "channel_mult": positive(min_len=1), "num_res_blocks": POSITIVE,
        "attention_resolutions": positive(note="empty: no attention"), "num_head_channels": POSITIVE,
        "dropout": UNIT, "diffusion_steps": POSITIVE,
        "train_steps": non_negative(note="0: the untrained backbone (Figure 7's first point)"),
        "train_batch": POSITIVE, "lr": POSITIVE, "ema_decay": Limit(0, 1, high_open=True, note="0: no EMA"),
        "blocks_medical": non_negative(min_len=1), "blocks_natural": non_negative(min_len=1),
        "timesteps_medical": non_negative(min_len=1), "timesteps_natural": non_negative(min_len=1),
        "noise_seed": NON_NEGATIVE,
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        try:
            unet = unet_config(self)
        except ConfigError as exc:  # the UNet's own checks (GroupNorm widths, head channels)
            raise FieldError(exc.key, exc.message) from None
        sides = [self.window // 2**level for level in range(len(self.channel_mult)) if self.window % 2**level == 0]
        if any(r not in sides for r in self.attention_resolutions):  # else it would attend nowhere
            raise FieldError("attention_resolutions", f"every value must be a side this UNet has at window "
                             f"{self.window} ({', '.join(map(str, sides))}), got {list(self.attention_resolutions)}")
        blocks = len(unet.channel_mult) * (unet.num_res_blocks + 1)  # the decoder's output_blocks
        for key in ("blocks_medical", "blocks_natural"):
            if max(getattr(self, key)) >= blocks:
                raise FieldError(key, f"decoder blocks are 0..{blocks - 1} for this UNet, got {getattr(self, key)}")
        for key in ("timesteps_medical", "timesteps_natural"):
            if max(getattr(self, key)) >= self.diffusion_steps:
                raise FieldError(key, f"timesteps must be in 0..{self.diffusion_steps - 1}, got {getattr(self, key)}")


def unet_config(c: DiffusionConfig) -> GDUNetConfig:
    """The guided-diffusion UNet of a DiffusionConfig."""
    return GDUNetConfig(
        image_size=c.window, in_channels=3, model_channels=c.model_channels,
        learn_sigma=c.learn_sigma, num_res_blocks=c.num_res_blocks,
        attention_resolutions=tuple(c.window // r for r in c.attention_resolutions),
        dropout=c.dropout, channel_mult=c.channel_mult, num_head_channels=c.num_head_channels,
        use_scale_shift_norm=c.use_scale_shift_norm, resblock_updown=c.resblock_updown,
    )


# The `tiny` diffusion UNet (ddpm, mdm): 32 channels, three levels, decoder blocks 2-4 read out.
TINY_UNET: dict[str, Any] = dict(
    model_channels=32, channel_mult=(1, 2, 2), num_res_blocks=1, attention_resolutions=(16,),
    num_head_channels=32, train_steps=120, train_batch=4, lr=2e-4, ema_decay=0.0,
    blocks_medical=(2, 3, 4), blocks_natural=(1, 2, 3, 4),
)


# The `small` diffusion UNet (ddpm, mdm) on 128-px windows: 32 channels, four levels (128..16 px),
# decoder blocks 3-6 read out (64^2 and 128^2, as blocks 8-12 of the paper's 256-px UNet).
SMALL_UNET: dict[str, Any] = dict(
    model_channels=32, channel_mult=(1, 2, 2, 4), num_res_blocks=1, attention_resolutions=(16,),
    num_head_channels=32, train_steps=800, train_batch=8, lr=2e-4, ema_decay=0.995,
    blocks_medical=(3, 4, 5, 6), blocks_natural=(2, 3, 4, 5, 6),
)


class DiffusionProbe(SSLMethod):
    """Base of the probes that read decoder features of a guided-diffusion UNet."""

    probe_only_fields = READOUT_FIELDS

    def gd_config(self) -> GDUNetConfig:
        return unet_config(self.cfg)

    def build_model(self, num_classes: int = 2) -> nn.Module:
        return GDUNet(self.gd_config())

    def schedule(self) -> PretrainSchedule:
        c = self.cfg
        return PretrainSchedule(steps=c.train_steps, batch=c.train_batch, crop=c.window, lr=c.lr,
                                ema_decay=c.ema_decay, ema_start=c.ema_start, ema_warmup=c.ema_warmup,
                                max_side=c.max_side)

    def schedules(self) -> dict[str, PretrainSchedule]:
        return {f"{self.name} pretrain": self.schedule()}

    def blocks_and_timesteps(self, domain: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
        c = self.cfg
        if domain == "medical":
            return c.blocks_medical, c.timesteps_medical
        return c.blocks_natural, c.timesteps_natural

    def model_input(self, x: torch.Tensor, t: int, noise: torch.Tensor) -> torch.Tensor:
        """The corrupted input the backbone sees at timestep t (a method's own corruption)."""
        raise NotImplementedError

    def extract(self, backbone: nn.Module, x: torch.Tensor, domain: str) -> list[torch.Tensor]:
        blocks, timesteps = self.blocks_and_timesteps(domain)
        x = x * 2 - 1
        noise = self.extraction_noise(x)
        maps: list[torch.Tensor] = []
        for t in timesteps:
            maps.extend(self._read_blocks(backbone, self.model_input(x, t, noise), t, blocks))
        return maps

    def _read_blocks(self, model: nn.Module, x: torch.Tensor, t: int, blocks: tuple[int, ...]) -> list[torch.Tensor]:
        output_blocks = cast(nn.ModuleList, model.get_submodule("output_blocks"))  # GDUNet's
        step = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
        return capture([output_blocks[i] for i in blocks], lambda: model(x, step))
