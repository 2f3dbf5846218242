"""The classic U-Net (Ronneberger et al., 2015), as the MDM paper's "UNet" baseline.

The network of zx-pan/mdm's `src/models/unet` (the widely used Pytorch-UNet layout with
transposed-convolution upsampling), written here from its description: an encoder of two
3x3 conv-BN-ReLU per level, 2x max-pooling between levels, a decoder that upsamples by a stride-2
transposed convolution to the skip's width, concatenates the skip and applies two conv-BN-ReLU,
and a 1x1 output convolution. Widths 64-128-256-512-1024 give 31,037,698 parameters for 3 input
channels and 2 classes. The convolutions of the double convs carry no bias (BatchNorm follows).
Inputs of any size work: an upsampled map is zero-padded to its skip's size where pooling
floored an odd side.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

WIDTHS = (64, 128, 256, 512, 1024)


def double_conv(in_ch: int, out_ch: int) -> nn.Sequential:
    """(3x3 conv without bias, BatchNorm, ReLU) twice."""
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1, bias=False), nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True),
        nn.Conv2d(out_ch, out_ch, kernel_size=3, padding=1, bias=False), nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True),
    )


class Up(nn.Module):
    """Transposed convolution (2x, to the skip's width), concatenation [skip, upsampled], double conv."""

    def __init__(self, deep_ch: int, skip_ch: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(deep_ch, skip_ch, kernel_size=2, stride=2)
        self.conv = double_conv(2 * skip_ch, skip_ch)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        x = self.up(x)
        dy, dx = skip.shape[-2] - x.shape[-2], skip.shape[-1] - x.shape[-1]
        if dy or dx:  # pooling floored an odd side: centre the upsampled map on the skip
            x = F.pad(x, [dx // 2, dx - dx // 2, dy // 2, dy - dy // 2])
        return self.conv(torch.cat([skip, x], dim=1))


class ClassicUNet(nn.Module):
    """(B, in_channels, H, W) -> (B, out_channels, H, W) logits; `widths` from the top level down."""

    def __init__(self, in_channels: int = 3, out_channels: int = 2, widths: tuple[int, ...] = WIDTHS) -> None:
        super().__init__()
        if len(widths) < 2 or min(widths) < 1:
            raise ValueError(f"widths needs at least two levels of width >= 1, got {widths}")
        self.inc = double_conv(in_channels, widths[0])
        self.downs = nn.ModuleList(double_conv(a, b) for a, b in zip(widths, widths[1:]))
        self.ups = nn.ModuleList(Up(b, a) for a, b in reversed(list(zip(widths, widths[1:]))))
        self.outc = nn.Conv2d(widths[0], out_channels, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        skips = [self.inc(x)]
        for down in self.downs:
            skips.append(down(F.max_pool2d(skips[-1], 2)))
        x = skips.pop()
        for up in self.ups:
            x = up(x, skips.pop())
        return self.outc(x)
