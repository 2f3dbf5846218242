"""UCTransNet (Wang et al., AAAI 2022): a U-Net whose skips go through a channel transformer.

A port of the official implementation (McGregorWwww/UCTransNet) as a plain `nn.Module`, laid out
so that the parameter count matches it exactly (66,430,657 for 3 input channels, 1 class, img 224).
One deliberate difference: the official model ends with a sigmoid when there is one class; this
port always returns logits, because the harness's weighted BCE + soft Dice loss applies the sigmoid
itself (numerically safer, and identical predictions after `torch.sigmoid`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bench.nn.uctransnet_config import UCTransNetConfig
from bench.nn.uctransnet_ctrans import ChannelTransformer

__all__ = ["UCTransNet", "UCTransNetConfig"]

class ConvBatchNorm(nn.Module):
    """3x3 conv (with bias, as the official) + BN + ReLU."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm2d(out_ch)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.norm(self.conv(x)))


def double_conv(in_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(ConvBatchNorm(in_ch, out_ch), ConvBatchNorm(out_ch, out_ch))


class DownBlock(nn.Module):
    """Max-pool by 2, then two conv-BN-ReLU."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.convs = double_conv(in_ch, out_ch)

    def forward(self, x: Tensor) -> Tensor:
        return self.convs(F.max_pool2d(x, 2))


class CCA(nn.Module):
    """Channel-wise cross attention: gates the skip's channels by pooled skip + decoder statistics."""

    def __init__(self, decoder_ch: int, skip_ch: int) -> None:
        super().__init__()
        self.mlp_x = nn.Linear(skip_ch, skip_ch)
        self.mlp_g = nn.Linear(decoder_ch, skip_ch)

    def forward(self, g: Tensor, x: Tensor) -> Tensor:
        att = (self.mlp_x(x.mean(dim=(2, 3))) + self.mlp_g(g.mean(dim=(2, 3)))) / 2.0
        return F.relu(x * torch.sigmoid(att)[:, :, None, None])


class UpBlockAttention(nn.Module):
    """Nearest 2x upsampling, CCA on the skip, concatenation, two conv-BN-ReLU."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.coatt = CCA(in_ch // 2, in_ch // 2)
        self.convs = double_conv(in_ch, out_ch)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        up = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.convs(torch.cat([self.coatt(up, skip), up], dim=1))


class UCTransNet(nn.Module):
    """UCTransNet returning logits of shape (B, n_classes, img_size, img_size)."""

    def __init__(self, cfg: UCTransNetConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or UCTransNetConfig()
        c1, c2, c3, c4 = cfg.skip_channels
        self.inc = ConvBatchNorm(cfg.n_channels, c1)  # a single conv, as the official
        self.down1 = DownBlock(c1, c2)
        self.down2 = DownBlock(c2, c3)
        self.down3 = DownBlock(c3, c4)
        self.down4 = DownBlock(c4, c4)
        self.mtc = ChannelTransformer(cfg)
        self.up4 = UpBlockAttention(2 * c4, c3)
        self.up3 = UpBlockAttention(2 * c3, c2)
        self.up2 = UpBlockAttention(2 * c2, c1)
        self.up1 = UpBlockAttention(2 * c1, c1)
        self.outc = nn.Conv2d(c1, cfg.n_classes, kernel_size=1)

    def check_input(self, x: Tensor) -> None:
        """The position embeddings fix the token count, so only the configured size is accepted."""
        n = self.cfg.img_size
        if x.ndim != 4 or x.shape[1] != self.cfg.n_channels or x.shape[-2:] != (n, n):
            raise ValueError(
                f"UCTransNet expects input of shape (B, {self.cfg.n_channels}, {n}, {n}) "
                f"(img_size={n}), got {tuple(x.shape)}"
            )

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        x1 = self.inc(x)
        x2 = self.down1(x1)
        x3 = self.down2(x2)
        x4 = self.down3(x3)
        x5 = self.down4(x4)
        s1, s2, s3, s4 = self.mtc((x1, x2, x3, x4))
        y = self.up4(x5, s4)
        y = self.up3(y, s3)
        y = self.up2(y, s2)
        y = self.up1(y, s1)
        return self.outc(y)
