"""Building blocks of the guided-diffusion UNet, laid out so state-dict keys match the release.

Module attribute names and `nn.Sequential` indices are part of the checkpoint format
(e.g. `in_layers.2` is the first conv, `out_layers.3` the zero-initialised second conv), so they
must not be renamed or reordered. Attention runs through `F.scaled_dot_product_attention`, which has
no parameters and therefore leaves the keys alone.
"""
from __future__ import annotations

import math
from typing import Any, TypeVar, cast

import torch
import torch.nn.functional as F
from torch import nn

GROUPS = 32
M = TypeVar("M", bound=nn.Module)
MAX_PERIOD = 10000


def conv_nd(dims: int, *args: Any, **kwargs: Any) -> nn.Module:
    """A 1-, 2- or 3-D convolution (guided-diffusion uses 1-D convs for qkv and proj_out)."""
    return {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[dims](*args, **kwargs)


def avg_pool_nd(dims: int, *args: Any, **kwargs: Any) -> nn.Module:
    """A 1-, 2- or 3-D average pool for downsampling without a conv."""
    return {1: nn.AvgPool1d, 2: nn.AvgPool2d, 3: nn.AvgPool3d}[dims](*args, **kwargs)


def zero_module(module: M) -> M:
    """Zero a layer's parameters so every residual branch starts as the identity."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class GroupNorm32(nn.GroupNorm):
    """GroupNorm computed in float32 whatever the activation dtype, as guided-diffusion does.

    The affine parameters are upcast too, so a model cast wholesale to bfloat16 still works. For
    float32 tensors every cast is a no-op, so the common path pays nothing for them.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = None if self.weight is None else self.weight.float()
        bias = None if self.bias is None else self.bias.float()
        return F.group_norm(x.float(), self.num_groups, weight, bias, self.eps).to(x.dtype)

    def modulated(self, x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
        """norm(x) * (1 + scale) + shift for per-sample (B, C) scale and shift, in one kernel.

        Folding the batch into the channel axis turns the per-sample modulation into a plain
        GroupNorm affine, so the normalisation and the FiLM run fused (forward and backward); the
        unfused broadcast multiply-add costs about as much again as the norm itself on CPU.
        """
        b, c = x.shape[:2]
        if not x.is_contiguous() or self.weight is None or self.bias is None:
            return torch.addcmul(_expand_as(shift, x), self(x), 1 + _expand_as(scale, x))
        gain = 1 + scale.float()
        weight = (self.weight.float() * gain).reshape(-1)
        bias = (self.bias.float() * gain + shift.float()).reshape(-1)
        flat = x.float().reshape(1, b * c, *x.shape[2:])
        out = F.group_norm(flat, b * self.num_groups, weight, bias, self.eps)
        return out.reshape(x.shape).to(x.dtype)


def _expand_as(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(B, C) -> (B, C, 1, ...) broadcastable against x."""
    return v.reshape(*v.shape, *([1] * (x.dim() - 2)))


def normalization(channels: int) -> GroupNorm32:
    """The UNet's only normalisation: 32-group GroupNorm."""
    return GroupNorm32(GROUPS, channels)


def timestep_embedding(timesteps: torch.Tensor, dim: int, max_period: int = MAX_PERIOD
                       ) -> torch.Tensor:
    """Sinusoidal embedding [cos | sin] of (possibly fractional) timesteps, guided-diffusion order."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period)
                      * torch.arange(half, dtype=torch.float32, device=timesteps.device) / half)
    args = timesteps[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class TimestepBlock(nn.Module):
    """A block whose forward also takes the timestep embedding."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


class TimestepEmbedSequential(nn.Sequential):
    """Sequential that hands the embedding to the children that need it."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, emb) if isinstance(layer, TimestepBlock) else layer(x)
        return x


class Upsample(nn.Module):
    """Nearest 2x upsampling (inner two axes for 3-D), optionally followed by a 3x3 conv."""

    def __init__(self, channels: int, use_conv: bool, dims: int = 2,
                 out_channels: int | None = None) -> None:
        super().__init__()
        self.channels, self.dims, self.use_conv = channels, dims, use_conv
        self.out_channels = out_channels or channels
        if use_conv:
            self.conv = conv_nd(dims, channels, self.out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.dims == 3:
            x = F.interpolate(x, (x.shape[2], x.shape[3] * 2, x.shape[4] * 2), mode="nearest")
        else:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.conv(x) if self.use_conv else x


class Downsample(nn.Module):
    """2x downsampling (inner two axes for 3-D): strided 3x3 conv or average pooling."""

    def __init__(self, channels: int, use_conv: bool, dims: int = 2,
                 out_channels: int | None = None) -> None:
        super().__init__()
        self.channels, self.dims, self.use_conv = channels, dims, use_conv
        self.out_channels = out_channels or channels
        stride = (1, 2, 2) if dims == 3 else 2
        if use_conv:
            self.op = conv_nd(dims, channels, self.out_channels, 3, stride=stride, padding=1)
        else:
            if self.out_channels != channels:
                raise ValueError("average-pool downsampling cannot change the channel count")
            self.op = avg_pool_nd(dims, kernel_size=stride, stride=stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class ResBlock(TimestepBlock):
    """Residual block conditioned on the timestep, optionally resampling (resblock_updown).

    With `use_scale_shift_norm` the embedding yields a (scale, shift) pair applied after the
    second GroupNorm (FiLM); otherwise it is added before it.
    """

    def __init__(self, channels: int, emb_channels: int, dropout: float,
                 out_channels: int | None = None, use_conv: bool = False,
                 use_scale_shift_norm: bool = False, dims: int = 2,
                 up: bool = False, down: bool = False) -> None:
        super().__init__()
        out_ch = out_channels or channels
        self.out_channels, self.use_scale_shift_norm = out_ch, use_scale_shift_norm
        self.in_layers = nn.Sequential(normalization(channels), nn.SiLU(),
                                       conv_nd(dims, channels, out_ch, 3, padding=1))
        self.updown = up or down
        if up:
            self.h_upd: nn.Module = Upsample(channels, False, dims)
            self.x_upd: nn.Module = Upsample(channels, False, dims)
        elif down:
            self.h_upd, self.x_upd = Downsample(channels, False, dims), Downsample(channels, False, dims)
        else:
            self.h_upd = self.x_upd = nn.Identity()
        self.emb_layers = nn.Sequential(
            nn.SiLU(), nn.Linear(emb_channels, 2 * out_ch if use_scale_shift_norm else out_ch))
        self.out_layers = nn.Sequential(
            normalization(out_ch), nn.SiLU(), nn.Dropout(p=dropout),
            zero_module(conv_nd(dims, out_ch, out_ch, 3, padding=1)))
        if out_ch == channels:
            self.skip_connection: nn.Module = nn.Identity()
        else:
            self.skip_connection = conv_nd(dims, channels, out_ch, 3 if use_conv else 1,
                                           padding=1 if use_conv else 0)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        if self.updown:
            # Resample between the activation and the conv, and resample the skip path too.
            h = self.in_layers[1](self.in_layers[0](x))
            h = self.in_layers[2](self.h_upd(h))
            x = self.x_upd(x)
        else:
            h = self.in_layers(x)
        emb_out = self.emb_layers(emb).to(h.dtype)
        norm, rest = self.out_layers[0], self.out_layers[1:]
        if self.use_scale_shift_norm:
            scale, shift = emb_out.chunk(2, dim=1)
            h = cast(GroupNorm32, norm).modulated(h, scale, shift)
        else:
            h = norm(h + _expand_as(emb_out, h))
        return self.skip_connection(x) + rest(h)


class QKVAttentionLegacy(nn.Module):
    """Attention over qkv channels laid out per head as [q | k | v] (the original checkpoints).

    Works on token-major tensors (B, T, 3*C) -> (B, T, C) so q, k, v reach SDPA with unit-stride
    head channels, which lets it use its fused kernel instead of the unfused fallback.
    """

    def __init__(self, n_heads: int) -> None:
        super().__init__()
        self.n_heads = n_heads

    def forward(self, qkv: torch.Tensor) -> torch.Tensor:
        b, length, width = qkv.shape
        ch = width // (3 * self.n_heads)
        q, k, v = qkv.reshape(b, length, self.n_heads, 3, ch).permute(3, 0, 2, 1, 4).unbind(0)
        return _attend(q, k, v)


class QKVAttention(nn.Module):
    """Attention over qkv channels laid out as [q of all heads | k | v] (new attention order)."""

    def __init__(self, n_heads: int) -> None:
        super().__init__()
        self.n_heads = n_heads

    def forward(self, qkv: torch.Tensor) -> torch.Tensor:
        b, length, width = qkv.shape
        ch = width // (3 * self.n_heads)
        q, k, v = qkv.reshape(b, length, 3, self.n_heads, ch).permute(2, 0, 3, 1, 4).unbind(0)
        return _attend(q, k, v)


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(ch)) v on (B, heads, T, ch), returned as (B, T, heads*ch)."""
    out = F.scaled_dot_product_attention(q, k, v)
    return out.transpose(1, 2).flatten(2)


def _pointwise(conv: nn.Conv1d, tokens: torch.Tensor) -> torch.Tensor:
    """Apply a kernel-size-1 Conv1d to (B, T, C) tokens as a matmul (same weights, same result)."""
    return F.linear(tokens, conv.weight.squeeze(-1), conv.bias)


class AttentionBlock(nn.Module):
    """Self-attention over all spatial positions, residual, zero-initialised output projection.

    `qkv` and `proj_out` stay Conv1d modules because their (out, in, 1) weights are the checkpoint
    format; the forward applies them as matmuls on token-major tensors, which is cheaper on CPU.
    """

    def __init__(self, channels: int, num_heads: int = 1, num_head_channels: int = -1,
                 use_new_attention_order: bool = False) -> None:
        super().__init__()
        self.channels = channels
        self.num_heads = num_heads if num_head_channels == -1 else channels // num_head_channels
        self.norm = normalization(channels)
        self.qkv = nn.Conv1d(channels, channels * 3, 1)  # conv_nd(1, ...), typed for _pointwise
        self.attention = (QKVAttention if use_new_attention_order
                          else QKVAttentionLegacy)(self.num_heads)
        self.proj_out = zero_module(nn.Conv1d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, *spatial = x.shape
        x = x.reshape(b, c, -1)
        tokens = self.norm(x).transpose(1, 2)
        h = _pointwise(self.proj_out, self.attention(_pointwise(self.qkv, tokens)))
        return (x + h.transpose(1, 2)).reshape(b, c, *spatial)
