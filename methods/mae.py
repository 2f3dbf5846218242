"""MAE (He et al.): masked-autoencoder pre-training, ViT block outputs as pixel features."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal, cast

import numpy as np
import torch
from torch import nn

from bench.context import RunContext
from bench.diffusion import ssim_loss
from bench.distributed import unwrap
from bench.errors import FieldError
from bench.limits import FRACTION, NON_NEGATIVE, POSITIVE, UNIT, Limit, Rule, non_negative
from bench.nn.imagenet import imagenet_normalise
from bench.nn.mae_vit import MAEArch, MAEViT, masked_patch_loss, masked_reconstruction
from bench.pretrain import LRSchedule, PretrainSchedule, pretrain
from bench.registry import register
from bench.ssl import SMALL_PROBE, TINY_PROBE, SSLConfig, SSLMethod

LOSSES = ("norm_pix", "mse", "ssim")

# MAE's own pre-training recipe (main_pretrain.py; docs/official-protocol.md, "Method details"):
# RandomResizedCrop (scale 0.2-1, bicubic) and flip, a per-step linear warm-up then half-cycle
# cosine to 0, no weight decay on biases and norms. The `paper` preset trains with it under
# either protocol; protocol "official" pins it (with AdamW (0.9, 0.95) and weight decay 0.05).
MAE_RECIPE: dict[str, Any] = dict(crop_scale=(0.2, 1.0), lr_schedule="warmup_cosine", warmup_fraction=0.02,
                                  decay_exclusions=True)


@dataclass(frozen=True)
class MAEConfig(SSLConfig):
    """ViT-L/8 MAE at 256 px (REFERENCE §5); optimiser as MAE's recipe, lr scaled to the batch."""

    patch: int = 8
    embed_dim: int = 1024
    depth: int = 24
    heads: int = 16
    decoder_dim: int = 512
    decoder_depth: int = 8
    decoder_heads: int = 16
    mask_ratio: float = 0.75
    loss: Literal["norm_pix", "mse", "ssim"] = "norm_pix"  # MAE's | raw pixels | Table 4, on the image
    train_steps: int = 10000
    train_batch: int = 64
    lr: float = 3.75e-5               # MAE's base lr 1.5e-4 x batch / 256
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.95)
    feature_blocks: int = 12          # read out the outputs of the last N encoder blocks
    crop_scale: tuple[float, float] | None = None  # RandomResizedCrop's area range; None: plain random crops
    lr_schedule: LRSchedule = "constant"  # constant | warmup_cosine: linear warm-up, then half-cycle cosine to 0
    warmup_fraction: float = 0.02     # warmup_cosine: the warm-up's share of train_steps
    decay_exclusions: bool = False    # no weight decay on biases and norm parameters (timm's rule)

    # Protocol "official": MAE's recipe with its optimiser; the lr stays the preset's (the official
    # GlaS run's is not published).
    OFFICIAL: ClassVar[dict[str, Any]] = dict(**MAE_RECIPE, betas=(0.9, 0.95), weight_decay=0.05)
    LEGACY: ClassVar[dict[str, Any]] = dict(
        crop_scale=None, lr_schedule="constant", warmup_fraction=0.02, decay_exclusions=False)

    LIMITS: ClassVar[dict[str, Rule]] = {
        "patch": POSITIVE, "embed_dim": POSITIVE, "depth": POSITIVE, "heads": POSITIVE, "decoder_dim": POSITIVE,
        "decoder_depth": non_negative(note="0: a linear decoder"), "decoder_heads": POSITIVE,
        "mask_ratio": Limit(0, 1, low_open=True, high_open=True),
        "train_steps": non_negative(note="0: the untrained backbone"), "train_batch": POSITIVE, "lr": POSITIVE,
        "weight_decay": NON_NEGATIVE, "betas": UNIT, "feature_blocks": POSITIVE,
        "crop_scale": FRACTION, "warmup_fraction": UNIT,
    }

    def __post_init__(self) -> None:
        """Fail at config time on settings the model cannot honour."""
        super().__post_init__()
        if self.window % self.patch:
            raise FieldError("window", f"{self.window} is not a multiple of patch {self.patch}")
        patches = (self.window // self.patch) ** 2
        visible = int(patches * (1 - self.mask_ratio))  # as bench.nn.mae_vit.random_masking keeps
        if not 1 <= visible < patches:
            raise FieldError("mask_ratio", f"{self.mask_ratio} of {patches} patches leaves {visible} visible; "
                             "at least one must be visible and one hidden")
        for key in ("embed_dim", "decoder_dim"):
            if getattr(self, key) % 4:
                raise FieldError(key, f"the sin-cos position embedding needs a multiple of 4, got {getattr(self, key)}")
        if self.embed_dim % self.heads:
            raise FieldError("heads", f"embed_dim {self.embed_dim} is not divisible by {self.heads} heads")
        if self.decoder_dim % self.decoder_heads:
            raise FieldError("decoder_heads",
                             f"decoder_dim {self.decoder_dim} is not divisible by {self.decoder_heads} heads")
        if not 1 <= self.feature_blocks <= self.depth:
            raise FieldError("feature_blocks", f"must be in 1..{self.depth}, got {self.feature_blocks}")
        if self.crop_scale is not None and not (
                len(self.crop_scale) == 2 and 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1):
            raise FieldError("crop_scale", f"expected [low, high] with 0 < low <= high <= 1, got {self.crop_scale}")
        if not 0 <= self.warmup_fraction < 1:
            raise FieldError("warmup_fraction", f"must be in [0, 1), got {self.warmup_fraction}")


@register("mae", "ssl")
class MAE(SSLMethod):
    """MAE pixel features: a masked-autoencoder ViT read out at its last blocks, unmasked."""

    Config = MAEConfig
    probe_only_fields = ("feature_blocks",)
    presets = {
        "tiny": MAEConfig(
            **TINY_PROBE, embed_dim=48, depth=4, heads=4, decoder_dim=32, decoder_depth=1, decoder_heads=4,
            train_steps=100, train_batch=8, lr=1e-3, feature_blocks=3,
        ),
        "small": MAEConfig(
            **SMALL_PROBE, embed_dim=192, depth=6, heads=3, decoder_dim=128, decoder_depth=2, decoder_heads=4,
            train_steps=1500, train_batch=16, lr=5e-4, feature_blocks=4,
        ),
        "paper": MAEConfig(protocol="official", **MAE_RECIPE),
    }

    def arch(self) -> MAEArch:
        c = self.cfg
        return MAEArch(img_size=c.window, patch=c.patch, embed_dim=c.embed_dim, depth=c.depth, heads=c.heads,
                       decoder_dim=c.decoder_dim, decoder_depth=c.decoder_depth, decoder_heads=c.decoder_heads)

    def build_model(self, num_classes: int = 2) -> MAEViT:
        return MAEViT(self.arch())

    def step_loss(self, model: nn.Module, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """x: crops in [-1, 1]. The SSIM variant compares the reconstructed image in that range."""
        c = self.cfg
        net = cast(MAEViT, unwrap(model))  # for patchify (model may be its DDP wrapper: call that)
        if c.loss == "ssim":
            pred, mask = model(imagenet_normalise((x + 1) / 2), c.mask_ratio, gen)
            return ssim_loss(masked_reconstruction(net, x, pred, mask), x)
        images = imagenet_normalise((x + 1) / 2)
        pred, mask = model(images, c.mask_ratio, gen)
        return masked_patch_loss(net, images, pred, mask, norm_pix=c.loss == "norm_pix")

    def schedules(self) -> dict[str, PretrainSchedule]:
        c = self.cfg
        return {"mae pretrain": PretrainSchedule(steps=c.train_steps, batch=c.train_batch, crop=c.window,
                                                 lr=c.lr, weight_decay=c.weight_decay, betas=c.betas,
                                                 max_side=c.max_side, crop_scale=c.crop_scale,
                                                 lr_schedule=c.lr_schedule,
                                                 warmup_steps=round(c.warmup_fraction * c.train_steps),
                                                 decay_exclusions=c.decay_exclusions)}

    def pretrain(self, images: list[np.ndarray], ctx: RunContext) -> dict[str, Any]:
        ((desc, sched),) = self.schedules().items()
        return pretrain(self.build_model(), images, sched, self.step_loss, ctx.device, self.cfg.pretrain_seed,
                        ctx.progress, desc=desc)

    def extract(self, backbone: nn.Module, x: torch.Tensor, domain: str) -> list[torch.Tensor]:
        return cast(MAEViT, backbone).features(imagenet_normalise(x), self.cfg.feature_blocks)
