"""MedT, the Medical Transformer (Valanarasu et al., MICCAI 2021), with Local-Global training.

A port of the official `medt_net` (jeya-maria-jose/Medical-Transformer) as a plain `nn.Module`,
laid out so the parameter count matches it exactly (1,560,140 for 3 channels, 2 classes, img 128).
The global branch (gated axial attention, two stages) sees the whole image; the local branch
(axial attention without positional terms, four stages) sees each cell of a 4x4 grid of patches
with shared weights; the two feature maps are summed and mapped to class logits. Like the
official model it returns logits (its softmax layer is never applied in its forward).

Faithfulness notes, kept on purpose so counts and behaviour match the official code:
- the official also builds `adjust_p` (a 1x1 conv to the classes) that its forward never uses;
  it is kept, frozen (requires_grad=False), as are the local blocks' unused `conv1`;
- the gates of the gated attention are fixed, non-trainable parameters there (see medt_axial);
- the local stem is wider than the global one (see `MedT.__init__`), an accident of the official
  constructor that is part of its published parameter count;
- the official forward slices fixed 32-px patches (`local_patch=32`): a 4x4 grid of them covers
  its native 128-px input, but at any other size only the top-left 128 x 128 block, the local map
  elsewhere being a copy of the global one (so the fused map there is twice the global features).
  `local_patch=None` (the default) tiles the whole input instead; the two agree at 128;
- the local patches are run one by one, so BatchNorm statistics are per patch in training.
  `batch_local_patches=True` stacks them into one batch instead (much faster on a GPU, same
  outputs in eval mode, slightly different BatchNorm statistics in training).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bench.errors import ConfigError
from bench.nn.medt_axial import make_layer

_WHERE = "MedTConfig"


@dataclass(frozen=True)
class MedTConfig:
    """Architecture of MedT; defaults are the official `MedT` constructor's."""

    n_channels: int = 3
    n_classes: int = 2
    img_size: int = 128
    layers: tuple[int, int, int, int] = (1, 2, 4, 1)
    width_factor: float = 0.125  # the paper's s
    groups: int = 8  # attention heads
    grid: int = 4  # the local branch sees a grid x grid tiling of the image
    stem_mid_channels: int = 128  # fixed (not scaled by s) in the official stem
    batch_local_patches: bool = False
    local_patch: int | None = None  # None: img_size / grid; a side: grid x grid such patches from the top-left

    def __post_init__(self) -> None:
        for key in ("n_channels", "n_classes", "img_size", "groups", "grid", "stem_mid_channels"):
            if getattr(self, key) < 1:
                raise ConfigError(_WHERE, key, f"must be >= 1, got {getattr(self, key)}")
        if len(self.layers) != 4 or min(self.layers) < 1:
            raise ConfigError(_WHERE, "layers", f"needs four stage depths >= 1, got {self.layers}")
        if self.local_patch is None and self.img_size % (self.grid * 32):
            raise ConfigError(
                _WHERE, "img_size",
                f"must be divisible by grid*32 = {self.grid * 32} (each local patch is halved 5 times), "
                f"got {self.img_size}",
            )
        if self.local_patch is not None:
            if self.local_patch < 32 or self.local_patch % 32:
                raise ConfigError(_WHERE, "local_patch", f"must be a multiple of 32 (halved 5 times), got {self.local_patch}")
            if self.img_size % 4 or self.img_size < self.grid * self.local_patch:
                raise ConfigError(
                    _WHERE, "img_size",
                    f"must be a multiple of 4 and at least grid*local_patch = {self.grid * self.local_patch}, "
                    f"got {self.img_size}",
                )
        if any(p % (2 * self.groups) for p in self.planes):
            raise ConfigError(_WHERE, "width_factor", f"stage widths {self.planes} must split into {self.groups} even groups")

    @property
    def planes(self) -> tuple[int, int, int, int]:
        """Bottleneck widths of the four stages (16, 32, 64, 128 at s=0.125); outputs are twice that."""
        a, b, c, d = (int(width * self.width_factor) for width in (128, 256, 512, 1024))
        return a, b, c, d

    @property
    def patch_size(self) -> int:
        return self.img_size // self.grid if self.local_patch is None else self.local_patch


class Stem(nn.Module):
    """7x7 stride-2 conv, then two 3x3 convs, each bias-free with BN + ReLU."""

    def __init__(self, in_ch: int, mid_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, kernel_size=7, stride=2, padding=3, bias=False)
        self.conv2 = nn.Conv2d(out_ch, mid_ch, kernel_size=3, padding=1, bias=False)
        self.conv3 = nn.Conv2d(mid_ch, out_ch, kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.bn2 = nn.BatchNorm2d(mid_ch)
        self.bn3 = nn.BatchNorm2d(out_ch)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return F.relu(self.bn3(self.conv3(x)))


def conv3x3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride, padding=1)


def up_relu(conv: nn.Module, x: Tensor) -> Tensor:
    """The official decoder step: conv, bilinear 2x upsampling, ReLU."""
    return F.relu(F.interpolate(conv(x), scale_factor=2, mode="bilinear", align_corners=False))


class Branch(nn.Module):
    """Stem, `depth` axial stages (only the first unstrided), and a U-shaped conv decoder.

    With depth 2 and gated attention it is MedT's global branch; with depth 4 and plain axial
    attention it is the local branch (whose decoder starts with an extra strided conv).
    """

    def __init__(self, cfg: MedTConfig, size: int, depth: int, gated: bool, stem_out: int) -> None:
        super().__init__()
        p = cfg.planes
        self.stem = Stem(cfg.n_channels, cfg.stem_mid_channels, stem_out)
        ins = (stem_out, 2 * p[0], 2 * p[1], 2 * p[2])
        kernels = (size // 2, size // 2, size // 4, size // 8)
        # Only the official position-free block (`AxialBlock_wopos`) carries the unused conv1.
        self.stages = nn.ModuleList(
            make_layer(
                ins[i], p[i], cfg.layers[i], cfg.groups, kernels[i], stride=1 if i == 0 else 2,
                gated=gated, unused_conv1=not gated,
            )
            for i in range(depth)
        )
        deepest = 2 * p[depth - 1]
        # The local branch's first decoder conv halves the deepest map before the U-shaped ascent.
        self.bottom = conv3x3(deepest, deepest, stride=2) if depth == 4 else None
        self.decoders = nn.ModuleList(conv3x3(2 * p[i], 2 * p[i - 1]) for i in range(depth - 1, 0, -1))
        self.last = conv3x3(2 * p[0], p[0])

    def forward(self, x: Tensor) -> Tensor:
        feats = []
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        if self.bottom is not None:
            x = up_relu(self.bottom, x) + feats[-1]
        for conv, skip in zip(self.decoders, reversed(feats[:-1])):
            x = up_relu(conv, x) + skip
        return up_relu(self.last, x)


class MedT(nn.Module):
    """MedT returning logits of shape (B, n_classes, img_size, img_size)."""

    def __init__(self, cfg: MedTConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or MedTConfig()
        self.global_branch = Branch(cfg, cfg.img_size, depth=2, gated=True, stem_out=int(64 * cfg.width_factor))
        # The official builds the local stem after the global stages without resetting its running
        # channel count, so the local stem is as wide as the global branch's last stage (64 at s=0.125).
        self.local_branch = Branch(cfg, cfg.patch_size, depth=4, gated=False, stem_out=2 * cfg.planes[1])
        self.decoderf = conv3x3(cfg.planes[0], cfg.planes[0])
        self.adjust = nn.Conv2d(cfg.planes[0], cfg.n_classes, kernel_size=1)
        self.adjust_p = nn.Conv2d(cfg.planes[0], cfg.n_classes, kernel_size=1).requires_grad_(False)

    def check_input(self, x: Tensor) -> None:
        """Relative position embeddings fix the axis lengths, so only the configured size is accepted."""
        n = self.cfg.img_size
        if x.ndim != 4 or x.shape[1] != self.cfg.n_channels or x.shape[-2:] != (n, n):
            raise ValueError(
                f"MedT expects input of shape (B, {self.cfg.n_channels}, {n}, {n}) (img_size={n}), "
                f"got {tuple(x.shape)}"
            )

    def local_features(self, x: Tensor) -> Tensor:
        """Runs the local branch on each cell of x (grid x grid patches) and tiles the results back."""
        g, p = self.cfg.grid, self.cfg.patch_size
        b, c = x.shape[:2]
        # (B, C, g*p, g*p) -> (g*g*B, C, p, p), cells in row-major order, batch innermost.
        cells = x.reshape(b, c, g, p, g, p).permute(2, 4, 0, 1, 3, 5).reshape(g * g * b, c, p, p)
        if self.cfg.batch_local_patches:
            out = self.local_branch(cells)
        else:
            out = torch.cat([self.local_branch(cell) for cell in cells.split(b)], dim=0)
        oc = out.shape[1]
        return out.reshape(g, g, b, oc, p, p).permute(2, 3, 0, 4, 1, 5).reshape(b, oc, g * p, g * p)

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        features = self.global_branch(x)
        n = self.cfg.grid * self.cfg.patch_size
        if n == self.cfg.img_size:
            local = self.local_features(x)
        else:  # the official at other sizes: local features in the top-left block, global ones elsewhere
            local = features.clone()
            local[..., :n, :n] = self.local_features(x[..., :n, :n])
        fused = features + local
        return self.adjust(F.relu(self.decoderf(fused)))
