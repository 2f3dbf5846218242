"""U-ViT (Bao et al.), the backbone of MaskDM (REFERENCE §7), with masked tokens dropped.

All inputs are tokens: the timestep is one token (its sinusoidal embedding), the image is a grid
of patch tokens, and a learned position embedding covers both. Transformer blocks are split into
in_blocks, a mid_block and out_blocks; every out block first fuses the matching in block's output
(a long skip: concatenate, then a linear layer). A layer norm and a linear layer turn each patch
token back into pixels, and a 3x3 conv smooths the seams between patches.

MaskDM's stage 1 passes `keep` (per-sample patch indices): only those patch tokens, with their
own position embeddings, enter the transformer, so a 90% mask also saves ~90% of the compute.
Dropped patches come out as zeros before the final conv; the loss looks at kept patches only.
Masks are block-wise: whole block x block groups of patches are kept or dropped together.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from timm.models.vision_transformer import Block
from torch import nn

from bench.nn.gd_blocks import timestep_embedding
from bench.nn.masking import visible_count

INIT_STD = 0.02
FINAL_CONV_KERNEL = 3


@dataclass(frozen=True)
class UViTArch:
    """Geometry of the network; the paper's is 256 px, patch 4, dim 768, depth 12, 12 heads."""

    img_size: int = 256
    patch: int = 4
    in_chans: int = 3
    embed_dim: int = 768
    depth: int = 12          # in_blocks = out_blocks = depth // 2, plus one mid_block
    heads: int = 12
    mlp_ratio: float = 4.0
    qkv_bias: bool = False

    @property
    def grid(self) -> int:
        return self.img_size // self.patch

    @property
    def num_patches(self) -> int:
        return self.grid**2

    @property
    def patch_dim(self) -> int:
        return self.patch**2 * self.in_chans

    @property
    def num_out_blocks(self) -> int:
        return self.depth // 2


class SkipBlock(nn.Module):
    """A pre-norm transformer block that may first fuse a long-skip input (concat + linear)."""

    def __init__(self, arch: UViTArch, skip: bool) -> None:
        super().__init__()
        dim = arch.embed_dim
        self.skip_linear = nn.Linear(2 * dim, dim) if skip else None
        self.block = Block(dim, arch.heads, mlp_ratio=arch.mlp_ratio, qkv_bias=arch.qkv_bias,
                           norm_layer=nn.LayerNorm)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        if self.skip_linear is not None:
            if skip is None:
                raise ValueError("this block fuses a long skip: pass `skip`")
            x = self.skip_linear(torch.cat([x, skip], dim=-1))
        return self.block(x)


class UViT(nn.Module):
    """Noise predictor over tokens; `forward(x, t, keep)` returns an image-sized epsilon."""

    def __init__(self, arch: UViTArch) -> None:
        super().__init__()
        if arch.img_size % arch.patch:
            raise ValueError(f"image size {arch.img_size} is not a multiple of patch {arch.patch}")
        if arch.depth % 2:
            raise ValueError(f"U-ViT depth must be even (in + out blocks), got {arch.depth}")
        self.arch = arch
        dim = arch.embed_dim
        self.patch_embed = nn.Conv2d(arch.in_chans, dim, arch.patch, stride=arch.patch)
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + arch.num_patches, dim))
        self.in_blocks = nn.ModuleList(SkipBlock(arch, skip=False) for _ in range(arch.num_out_blocks))
        self.mid_block = SkipBlock(arch, skip=False)
        self.out_blocks = nn.ModuleList(SkipBlock(arch, skip=True) for _ in range(arch.num_out_blocks))
        self.norm = nn.LayerNorm(dim)
        self.decoder_pred = nn.Linear(dim, arch.patch_dim)
        self.final_layer = nn.Conv2d(arch.in_chans, arch.in_chans, FINAL_CONV_KERNEL,
                                     padding=FINAL_CONV_KERNEL // 2)
        self._init_weights()

    def _init_weights(self) -> None:
        """U-ViT's init: truncated normal (std 0.02) for linears and positions, unit layer norms."""
        nn.init.trunc_normal_(self.pos_embed, std=INIT_STD)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=INIT_STD)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    # --- tokens in, tokens out ------------------------------------------------------------
    def embed(self, x: torch.Tensor, t: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
        """B x (1 + n) x dim: the time token, then the kept patch tokens (all when keep is None)."""
        patches = self.patch_embed(x).flatten(2).transpose(1, 2)  # B x L x dim
        pos = self.pos_embed[:, 1:].expand(x.shape[0], -1, -1)
        if keep is not None:
            index = keep.unsqueeze(-1).expand(-1, -1, patches.shape[-1])
            patches, pos = patches.gather(1, index), pos.gather(1, index)
        time = timestep_embedding(t, self.arch.embed_dim).to(patches.dtype).unsqueeze(1) + self.pos_embed[:, :1]
        return torch.cat([time, patches + pos], dim=1)

    def _run_blocks(self, tokens: torch.Tensor, stop_after: int | None = None) -> list[torch.Tensor]:
        """The outputs of the out_blocks, in order; with `stop_after`, only up to that block."""
        skips = []
        for blk in self.in_blocks:
            tokens = blk(tokens)
            skips.append(tokens)
        tokens = self.mid_block(tokens)
        outs = []
        for i, blk in enumerate(self.out_blocks):
            tokens = blk(tokens, skips.pop())
            outs.append(tokens)
            if stop_after is not None and i == stop_after:
                break
        return outs

    # --- image out -----------------------------------------------------------------------
    def forward(self, x: torch.Tensor, t: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """x: B x C x H x W noised image, t: B timesteps, keep: B x n patch indices or None."""
        tokens = self._run_blocks(self.embed(x, t, keep))[-1]
        patches = self.decoder_pred(self.norm(tokens))[:, 1:]  # drop the time token
        if keep is not None:
            canvas = patches.new_zeros(x.shape[0], self.arch.num_patches, patches.shape[-1])
            patches = canvas.scatter(1, keep.unsqueeze(-1).expand_as(patches), patches)
        return self.final_layer(self.unpatchify(patches))

    def unpatchify(self, patches: torch.Tensor) -> torch.Tensor:
        """B x L x (p*p*C) -> B x C x H x W, patches in row-major grid order."""
        a, b = self.arch, patches.shape[0]
        x = patches.reshape(b, a.grid, a.grid, a.patch, a.patch, a.in_chans)
        return x.permute(0, 5, 1, 3, 2, 4).reshape(b, a.in_chans, a.img_size, a.img_size)

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """The inverse of unpatchify."""
        a, b = self.arch, x.shape[0]
        x = x.reshape(b, a.in_chans, a.grid, a.patch, a.grid, a.patch)
        return x.permute(0, 2, 4, 3, 5, 1).reshape(b, a.num_patches, a.patch_dim)

    # --- features ------------------------------------------------------------------------
    def features(self, x: torch.Tensor, t: torch.Tensor, blocks: tuple[int, ...]) -> list[torch.Tensor]:
        """Outputs of out_blocks[i] for i in blocks as B x dim x H/p x W/p maps (unmasked input).

        The forward pass ends at the deepest requested block, so later blocks cost nothing.
        """
        n = self.arch.num_out_blocks
        if not blocks or min(blocks) < 0 or max(blocks) >= n:
            raise ValueError(f"out_blocks indices must be in 0..{n - 1}, got {blocks}")
        outs = self._run_blocks(self.embed(x, t, None), stop_after=max(blocks))
        g = self.arch.grid
        return [outs[i][:, 1:].transpose(1, 2).reshape(x.shape[0], -1, g, g) for i in blocks]



# --- MaskDM's block-wise masking -------------------------------------------------------------
def block_keep_indices(batch: int, grid: int, block: int, ratio: float, gen: torch.Generator) -> torch.Tensor:
    """B x n sorted indices of the patch tokens to keep, masking whole block x block groups.

    The grid of patches is cut into (grid / block)^2 blocks; each sample keeps a random
    int(blocks * (1 - ratio)) of them (at least one), so every sample keeps exactly
    n = kept blocks * block^2 patch tokens and the kept sequences stack into one batch.
    """
    if grid % block:
        raise ValueError(f"patch grid {grid} is not a multiple of the mask block {block}")
    per_side = grid // block
    kept_blocks = max(1, visible_count(per_side**2, ratio))
    chosen = torch.rand(batch, per_side**2, generator=gen).argsort(dim=1)[:, :kept_blocks]
    rows, cols = chosen // per_side, chosen % per_side                     # B x k block coords
    offsets = torch.arange(block)
    patch_rows = rows[..., None, None] * block + offsets.view(1, 1, block, 1)
    patch_cols = cols[..., None, None] * block + offsets.view(1, 1, 1, block)
    return (patch_rows * grid + patch_cols).flatten(1).sort(dim=1).values


def keep_pixel_mask(keep: torch.Tensor, grid: int, patch: int) -> torch.Tensor:
    """B x 1 x H x W float mask, 1 on the pixels of kept patches."""
    tokens = torch.zeros(keep.shape[0], grid * grid, device=keep.device)
    tokens.scatter_(1, keep, 1.0)
    mask = tokens.view(-1, 1, grid, grid)
    return mask.repeat_interleave(patch, dim=2).repeat_interleave(patch, dim=3)


def visible_mse(pred: torch.Tensor, target: torch.Tensor, keep_pixels: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the kept pixels only; masked pixels do not enter the loss at all."""
    weight = keep_pixels.to(pred.dtype).expand_as(pred)
    return ((pred.float() - target.float()) ** 2 * weight).sum() / weight.sum().clamp_min(1)
