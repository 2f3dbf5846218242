"""A masked autoencoder (He et al.) built from timm's ViT blocks, for the `mae` probe (REFERENCE §5).

The encoder sees only the visible patches (a random, per-sample subset); a lighter decoder fills
mask tokens back in and predicts each patch's pixels. Position embeddings are fixed 2-D sin-cos
tables, as in MAE, so they hold no parameters and cannot drift between pre-training and read-out.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import cast

import torch
from timm.layers import PatchEmbed
from timm.models.vision_transformer import Block
from torch import nn

LAYER_NORM_EPS = 1e-6
POS_TEMPERATURE = 10000.0
TOKEN_INIT_STD = 0.02
NORM_PIX_EPS = 1e-6


@dataclass(frozen=True)
class MAEArch:
    """Geometry of the encoder and decoder (ViT-L/8 with MAE's 512-d decoder at paper size)."""

    img_size: int = 256
    patch: int = 8
    embed_dim: int = 1024
    depth: int = 24
    heads: int = 16
    decoder_dim: int = 512
    decoder_depth: int = 8
    decoder_heads: int = 16
    mlp_ratio: float = 4.0

    @property
    def grid(self) -> int:
        return self.img_size // self.patch

    @property
    def num_patches(self) -> int:
        return self.grid**2


def sincos_pos_embed(dim: int, grid: int, cls_token: bool = True) -> torch.Tensor:
    """1 x (1 + grid^2) x dim fixed table: half the channels encode the row, half the column."""
    if dim % 4:
        raise ValueError(f"sin-cos position embedding needs a dim divisible by 4, got {dim}")
    quarter = dim // 4
    omega = 1.0 / POS_TEMPERATURE ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    coords = torch.arange(grid, dtype=torch.float64)
    rows, cols = torch.meshgrid(coords, coords, indexing="ij")

    def encode(pos: torch.Tensor) -> torch.Tensor:
        angles = pos.reshape(-1, 1) * omega.reshape(1, -1)
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    table = torch.cat([encode(rows), encode(cols)], dim=1).float()
    if cls_token:
        table = torch.cat([torch.zeros(1, dim), table], dim=0)
    return table.unsqueeze(0)


def random_masking(batch: int, length: int, ratio: float, gen: torch.Generator | None
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """MAE's per-sample shuffle: indices kept (B x n_keep), restore order, and mask (1 = hidden).

    Exactly int(L * (1 - ratio)) patches stay visible in every sample.
    """
    keep = int(length * (1 - ratio))
    noise = torch.rand(batch, length, generator=gen)
    shuffle = torch.argsort(noise, dim=1)
    restore = torch.argsort(shuffle, dim=1)
    mask = torch.ones(batch, length)
    mask[:, :keep] = 0
    return shuffle[:, :keep], restore, torch.gather(mask, 1, restore)


class MAEViT(nn.Module):
    """Encoder + decoder; `forward` returns per-patch predictions and the mask, `features` the maps."""

    pos_embed: torch.Tensor  # buffers (not saved: rebuilt from the arch)
    decoder_pos_embed: torch.Tensor

    def __init__(self, arch: MAEArch) -> None:
        super().__init__()
        self.arch = arch
        norm = partial(nn.LayerNorm, eps=LAYER_NORM_EPS)
        # timm annotates Block's norm_layer as a class, but only calls it (its own ViTs pass partials)
        norm_layer = cast(type[nn.Module], norm)
        self.patch_embed = PatchEmbed(arch.img_size, arch.patch, 3, arch.embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, arch.embed_dim))
        self.register_buffer("pos_embed", sincos_pos_embed(arch.embed_dim, arch.grid), persistent=False)
        self.blocks = nn.ModuleList(
            Block(arch.embed_dim, arch.heads, arch.mlp_ratio, qkv_bias=True, norm_layer=norm_layer)
            for _ in range(arch.depth))
        self.norm = norm(arch.embed_dim)
        self.decoder_embed = nn.Linear(arch.embed_dim, arch.decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, arch.decoder_dim))
        self.register_buffer("decoder_pos_embed", sincos_pos_embed(arch.decoder_dim, arch.grid), persistent=False)
        self.decoder_blocks = nn.ModuleList(
            Block(arch.decoder_dim, arch.decoder_heads, arch.mlp_ratio, qkv_bias=True, norm_layer=norm_layer)
            for _ in range(arch.decoder_depth))
        self.decoder_norm = norm(arch.decoder_dim)
        self.decoder_pred = nn.Linear(arch.decoder_dim, arch.patch**2 * 3)
        self._init_weights()

    def _init_weights(self) -> None:
        """MAE's initialisation: xavier linears (patch projection included), N(0, .02) tokens."""
        w = self.patch_embed.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.normal_(self.cls_token, std=TOKEN_INIT_STD)
        nn.init.normal_(self.mask_token, std=TOKEN_INIT_STD)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def patchify(self, images: torch.Tensor) -> torch.Tensor:
        """B x 3 x H x W -> B x L x (p*p*3), patches in row-major order."""
        p, b = self.arch.patch, images.shape[0]
        g_h, g_w = images.shape[-2] // p, images.shape[-1] // p
        x = images.reshape(b, 3, g_h, p, g_w, p).permute(0, 2, 4, 3, 5, 1)
        return x.reshape(b, g_h * g_w, p * p * 3)

    def unpatchify(self, patches: torch.Tensor) -> torch.Tensor:
        p, b, g = self.arch.patch, patches.shape[0], int(math.isqrt(patches.shape[1]))
        x = patches.reshape(b, g, g, p, p, 3).permute(0, 5, 1, 3, 2, 4)
        return x.reshape(b, 3, g * p, g * p)

    def _embed(self, images: torch.Tensor) -> torch.Tensor:
        return self.patch_embed(images) + self.pos_embed[:, 1:]

    def _with_cls(self, tokens: torch.Tensor) -> torch.Tensor:
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(tokens.shape[0], -1, -1)
        return torch.cat([cls, tokens], dim=1)

    def encode(self, images: torch.Tensor, ratio: float, gen: torch.Generator | None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Latent of the visible patches (cls first), the restore order and the mask."""
        tokens = self._embed(images)
        b, length, dim = tokens.shape
        kept, restore, mask = random_masking(b, length, ratio, gen)
        kept, restore, mask = kept.to(tokens.device), restore.to(tokens.device), mask.to(tokens.device)
        x = self._with_cls(torch.gather(tokens, 1, kept.unsqueeze(-1).expand(-1, -1, dim)))
        for block in self.blocks:
            x = block(x)
        return self.norm(x), restore, mask

    def decode(self, latent: torch.Tensor, restore: torch.Tensor) -> torch.Tensor:
        """Per-patch pixel predictions (B x L x p*p*3) in the original patch order."""
        x = self.decoder_embed(latent)
        b, length, dim = x.shape[0], restore.shape[1], x.shape[2]
        fill = self.mask_token.expand(b, length + 1 - x.shape[1], -1)
        tokens = torch.cat([x[:, 1:], fill], dim=1)
        tokens = torch.gather(tokens, 1, restore.unsqueeze(-1).expand(-1, -1, dim))
        x = torch.cat([x[:, :1], tokens], dim=1) + self.decoder_pos_embed
        for block in self.decoder_blocks:
            x = block(x)
        return self.decoder_pred(self.decoder_norm(x))[:, 1:]

    def forward(self, images: torch.Tensor, ratio: float, gen: torch.Generator | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        latent, restore, mask = self.encode(images, ratio, gen)
        return self.decode(latent, restore), mask

    def features(self, images: torch.Tensor, last: int) -> list[torch.Tensor]:
        """Outputs of the last `last` blocks on all patches (no masking, so no shuffle needed),
        cls token dropped, as B x D x (H/p) x (W/p) maps."""
        x = self._with_cls(self._embed(images))
        g_h, g_w = images.shape[-2] // self.arch.patch, images.shape[-1] // self.arch.patch
        first = len(self.blocks) - last
        maps = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i >= first:
                maps.append(x[:, 1:].transpose(1, 2).reshape(x.shape[0], -1, g_h, g_w))
        return maps


def masked_patch_loss(model: MAEViT, images: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor,
                      norm_pix: bool) -> torch.Tensor:
    """Mean squared error over the hidden patches only; targets per-patch normalised if norm_pix."""
    target = model.patchify(images).float()
    if norm_pix:
        mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
        target = (target - mean) / (var + NORM_PIX_EPS).sqrt()
    per_patch = ((pred.float() - target) ** 2).mean(-1)
    return (per_patch * mask).sum() / mask.sum()


def masked_reconstruction(model: MAEViT, images: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor
                          ) -> torch.Tensor:
    """The image with hidden patches replaced by predictions (visible ones stay the input's)."""
    mixed = torch.where(mask.bool().unsqueeze(-1), pred.to(images.dtype), model.patchify(images))
    return model.unpatchify(mixed)
