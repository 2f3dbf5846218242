"""The guided-diffusion UNet, module for module, so published checkpoints load with strict=True.

Used as the MDM / DDPM backbone: the ddpm-segmentation FFHQ-256 DDPM, the MDM release and any
openai/guided-diffusion model load into it unchanged, and the 18 decoder blocks of the paper
configuration are `output_blocks[i]` so features can be hooked there. MONAI's DiffusionModelUNet
cannot do this (no scale-shift norm, no learned sigma, different keys).
"""
from __future__ import annotations

from typing import cast

import torch
from torch import nn

from bench.nn.gd_blocks import (
    AttentionBlock,
    Downsample,
    ResBlock,
    TimestepEmbedSequential,
    Upsample,
    conv_nd,
    normalization,
    timestep_embedding,
    zero_module,
)
from bench.nn.gd_config import GDUNetConfig, attention_ds, decoder_block_channels, decoder_block_strides

__all__ = ["GDUNet", "GDUNetConfig", "attention_ds", "decoder_block_channels",
           "decoder_block_strides"]

TIME_EMBED_MULT = 4


class GDUNet(nn.Module):
    """guided-diffusion's UNetModel: `forward(x, timesteps[, y]) -> prediction`.

    The output has `cfg.resolved_out_channels` channels: the prediction (epsilon or x0), followed
    by the variance interpolation values when `learn_sigma` is set.
    """

    def __init__(self, cfg: GDUNetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        # guided-diffusion runs the trunk in float16 when use_fp16; otherwise activations keep the
        # input's dtype (so bf16 weights or autocast work without extra casts).
        self.trunk_dtype: torch.dtype | None = torch.float16 if cfg.use_fp16 else None
        emb_dim = cfg.model_channels * TIME_EMBED_MULT
        self.time_embed = nn.Sequential(nn.Linear(cfg.model_channels, emb_dim), nn.SiLU(),
                                        nn.Linear(emb_dim, emb_dim))
        if cfg.num_classes is not None:
            self.label_emb = nn.Embedding(cfg.num_classes, emb_dim)
        skip_chans = self._build_encoder(emb_dim)
        ch = cfg.level_channels[-1]
        self.middle_block = TimestepEmbedSequential(
            self._resblock(ch, emb_dim, ch),
            self._attention(ch, cfg.num_heads),
            self._resblock(ch, emb_dim, ch),
        )
        self._build_decoder(emb_dim, skip_chans)
        first = cfg.level_channels[0]
        self.out = nn.Sequential(
            normalization(first), nn.SiLU(),
            zero_module(conv_nd(cfg.dims, first, cfg.resolved_out_channels, 3, padding=1)))
        if cfg.use_fp16:
            self.convert_to_fp16()

    def _resblock(self, ch: int, emb_dim: int, out_ch: int, *, up: bool = False,
                  down: bool = False) -> ResBlock:
        return ResBlock(ch, emb_dim, self.cfg.dropout, out_channels=out_ch, dims=self.cfg.dims,
                        use_scale_shift_norm=self.cfg.use_scale_shift_norm, up=up, down=down)

    def _attention(self, ch: int, num_heads: int) -> AttentionBlock:
        return AttentionBlock(ch, num_heads=num_heads, num_head_channels=self.cfg.num_head_channels,
                              use_new_attention_order=self.cfg.use_new_attention_order)

    def _build_encoder(self, emb_dim: int) -> list[int]:
        """Create `input_blocks`; return the channels of every skip connection, in order."""
        cfg, widths = self.cfg, self.cfg.level_channels
        ch = widths[0]
        self.input_blocks = nn.ModuleList(
            [TimestepEmbedSequential(conv_nd(cfg.dims, cfg.in_channels, ch, 3, padding=1))])
        skip_chans, ds = [ch], 1
        for level, width in enumerate(widths):
            for _ in range(cfg.num_res_blocks):
                layers: list[nn.Module] = [self._resblock(ch, emb_dim, width)]
                ch = width
                if ds in cfg.attention_resolutions:
                    layers.append(self._attention(ch, cfg.num_heads))
                self.input_blocks.append(TimestepEmbedSequential(*layers))
                skip_chans.append(ch)
            if level != len(widths) - 1:
                down = (self._resblock(ch, emb_dim, ch, down=True) if cfg.resblock_updown
                        else Downsample(ch, cfg.conv_resample, cfg.dims, out_channels=ch))
                self.input_blocks.append(TimestepEmbedSequential(down))
                skip_chans.append(ch)
                ds *= 2
        return skip_chans

    def _build_decoder(self, emb_dim: int, skip_chans: list[int]) -> None:
        """Create `output_blocks`, consuming the encoder's skip channels from the deepest."""
        cfg, widths = self.cfg, self.cfg.level_channels
        skips = list(skip_chans)
        ch, ds = widths[-1], 2 ** (len(widths) - 1)
        self.output_blocks = nn.ModuleList()
        for level in reversed(range(len(widths))):
            width = widths[level]
            for i in range(cfg.num_res_blocks + 1):
                layers: list[nn.Module] = [self._resblock(ch + skips.pop(), emb_dim, width)]
                ch = width
                if ds in cfg.attention_resolutions:
                    layers.append(self._attention(ch, cfg.resolved_num_heads_upsample))
                if level and i == cfg.num_res_blocks:
                    layers.append(self._resblock(ch, emb_dim, ch, up=True) if cfg.resblock_updown
                                  else Upsample(ch, cfg.conv_resample, cfg.dims, out_channels=ch))
                    ds //= 2
                self.output_blocks.append(TimestepEmbedSequential(*layers))

    def convert_to_fp16(self) -> None:
        """Cast the trunk's convs to float16, as guided-diffusion's use_fp16 does."""
        for part in (self.input_blocks, self.middle_block, self.output_blocks):
            for m in part.modules():
                if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
                    m.half()

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor | float,
                y: torch.Tensor | None = None) -> torch.Tensor:
        """Predict from a noisy/corrupted batch `x` at `timesteps` (shape (B,) or scalar)."""
        t = torch.as_tensor(timesteps, device=x.device)
        if t.dim() == 0:
            t = t.expand(x.shape[0])
        emb = self.time_embed(timestep_embedding(t, self.cfg.model_channels).to(
            cast(nn.Linear, self.time_embed[0]).weight.dtype))
        if (y is None) != (self.cfg.num_classes is None):
            raise ValueError("pass class labels y if and only if the model is class-conditional")
        if y is not None:
            emb = emb + self.label_emb(y)
        h = x if self.trunk_dtype is None else x.to(self.trunk_dtype)
        skips: list[torch.Tensor] = []
        for block in self.input_blocks:
            h = block(h, emb)
            skips.append(h)
        h = self.middle_block(h, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
        return self.out(h if self.trunk_dtype is None else h.to(x.dtype))
