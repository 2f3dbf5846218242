"""The Channel Transformer (CTrans) that UCTransNet puts on its four skip connections.

Each skip feature map is cut into patches (one conv with kernel = stride = patch size, so every
scale ends up with the same number of tokens), the four token sets attend to their concatenation
*channel-wise* (the attention matrix is channels x channels, not tokens x tokens), and each result
is upsampled back, passed through a 1x1 conv + BN + ReLU and added to its skip. Module names and
the parameter layout follow the official implementation so that parameter counts match it.
"""
from __future__ import annotations

import math
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bench.nn.uctransnet_config import UCTransNetConfig

Tokens = tuple[Tensor, Tensor, Tensor, Tensor]


class ChannelEmbeddings(nn.Module):
    """Turns one skip map into tokens carrying its channels, plus learned positions."""

    def __init__(self, channels: int, patch_size: int, map_size: int, dropout: float) -> None:
        super().__init__()
        n_patches = (map_size // patch_size) ** 2
        self.patch_embeddings = nn.Conv2d(channels, channels, kernel_size=patch_size, stride=patch_size)
        self.position_embeddings = nn.Parameter(torch.zeros(1, n_patches, channels))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        tokens = self.patch_embeddings(x).flatten(2).transpose(1, 2)  # (B, N, C)
        return self.dropout(tokens + self.position_embeddings)


class Reconstruct(nn.Module):
    """Maps tokens back to the skip's resolution (nearest upsampling, then 1x1 conv + BN + ReLU)."""

    def __init__(self, channels: int, scale: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=1)
        self.norm = nn.BatchNorm2d(channels)
        self.scale = scale

    def forward(self, tokens: Tensor) -> Tensor:
        b, n, c = tokens.shape
        side = math.isqrt(n)
        x = tokens.transpose(1, 2).reshape(b, c, side, side)
        x = F.interpolate(x, scale_factor=self.scale, mode="nearest")
        return F.relu(self.norm(self.conv(x)))


class ChannelCrossAttention(nn.Module):
    """Multi-head channel-wise cross attention: each scale's channels query all 960 channels.

    As in the official code, every head has its own bias-free projections, the scores pass an
    (affine-free) instance norm over the heads before the softmax, and the heads are averaged
    rather than concatenated.
    """

    def __init__(self, channels: tuple[int, ...], kv_size: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.kv_size = kv_size

        def per_head(dim: int) -> nn.ModuleList:
            return nn.ModuleList(nn.Linear(dim, dim, bias=False) for _ in range(num_heads))

        self.queries = nn.ModuleList(per_head(c) for c in channels)
        self.key = per_head(kv_size)
        self.value = per_head(kv_size)
        self.psi = nn.InstanceNorm2d(num_heads)
        self.outs = nn.ModuleList(nn.Linear(c, c, bias=False) for c in channels)
        self.attn_dropout = nn.Dropout(dropout)
        self.proj_dropout = nn.Dropout(dropout)

    def forward(self, embs: Tokens, emb_all: Tensor) -> Tokens:
        k = torch.stack([proj(emb_all) for proj in self.key], dim=1)  # (B, h, N, KV)
        v = torch.stack([proj(emb_all) for proj in self.value], dim=1).transpose(-1, -2)  # (B, h, KV, N)
        outs = []
        for emb, queries, out in zip(embs, self.queries, self.outs):
            per_head = cast(nn.ModuleList, queries)
            q = torch.stack([proj(emb) for proj in per_head], dim=1).transpose(-1, -2)  # (B, h, C, N)
            scores = torch.matmul(q, k) / math.sqrt(self.kv_size)  # (B, h, C, KV)
            probs = self.attn_dropout(torch.softmax(self.psi(scores), dim=-1))
            context = torch.matmul(probs, v).mean(dim=1).transpose(1, 2)  # (B, N, C)
            outs.append(self.proj_dropout(out(context)))
        return tuple(outs)


class Mlp(nn.Module):
    """Position-wise feed-forward of one scale (Xavier weights, near-zero biases as the official)."""

    def __init__(self, dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.dropout = nn.Dropout(dropout)
        for fc in (self.fc1, self.fc2):
            nn.init.xavier_uniform_(fc.weight)
            nn.init.normal_(fc.bias, std=1e-6)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.fc2(self.dropout(F.gelu(self.fc1(x)))))


def _norms(channels: tuple[int, ...]) -> nn.ModuleList:
    return nn.ModuleList(nn.LayerNorm(c, eps=1e-6) for c in channels)


class CTransBlock(nn.Module):
    """Pre-norm transformer layer: channel cross attention, then per-scale MLPs, both residual."""

    def __init__(self, channels: tuple[int, ...], cfg: UCTransNetConfig) -> None:
        super().__init__()
        self.attn_norms = _norms(channels)
        self.attn_norm = nn.LayerNorm(cfg.kv_size, eps=1e-6)
        self.channel_attn = ChannelCrossAttention(
            channels, cfg.kv_size, cfg.num_heads, cfg.attention_dropout
        )
        self.ffn_norms = _norms(channels)
        self.ffns = nn.ModuleList(Mlp(c, c * cfg.expand_ratio, cfg.mlp_dropout) for c in channels)

    def forward(self, embs: Tokens) -> Tokens:
        emb_all = self.attn_norm(torch.cat(embs, dim=2))
        normed = tuple(norm(e) for norm, e in zip(self.attn_norms, embs))
        attended = self.channel_attn(normed, emb_all)
        mid = [e + a for e, a in zip(embs, attended)]
        return tuple(m + ffn(norm(m)) for m, ffn, norm in zip(mid, self.ffns, self.ffn_norms))


class ChannelTransformer(nn.Module):
    """Fuses the four skip maps (resolutions img, img/2, img/4, img/8) and returns refined skips."""

    def __init__(self, cfg: UCTransNetConfig) -> None:
        super().__init__()
        channels = cfg.skip_channels
        sizes = [cfg.img_size // 2**i for i in range(len(channels))]
        self.embeddings = nn.ModuleList(
            ChannelEmbeddings(c, p, s, cfg.embeddings_dropout)
            for c, p, s in zip(channels, cfg.patch_sizes, sizes)
        )
        self.layers = nn.ModuleList(CTransBlock(channels, cfg) for _ in range(cfg.num_layers))
        self.encoder_norms = _norms(channels)
        self.reconstructs = nn.ModuleList(Reconstruct(c, p) for c, p in zip(channels, cfg.patch_sizes))

    def forward(self, skips: Tokens) -> Tokens:
        embs: Tokens = tuple(emb(s) for emb, s in zip(self.embeddings, skips))
        for layer in self.layers:
            embs = layer(embs)
        return tuple(
            skip + rec(norm(e))
            for skip, e, norm, rec in zip(skips, embs, self.encoder_norms, self.reconstructs)
        )
