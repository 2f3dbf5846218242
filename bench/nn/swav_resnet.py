"""SwAV's network: a timm ResNet trunk (any width), projection head, and prototypes.

SwAV's RN50w2 doubles every width of ResNet-50, the 7x7 stem included (128 stem channels,
bottleneck widths 128..1024, 4096 output channels); timm's `wide_resnet50_2` widens only the
3x3 convolutions inside the bottlenecks, so it is a different network. timm's ResNet fixes the
plain stem at 64 channels, hence `resnet_trunk` rebuilds the stem and stages for other widths
with timm's own `make_blocks`, keeping timm's module names (and its weight layout) throughout.
"""
from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from timm.models.resnet import Bottleneck, ResNet, make_blocks
from torch import nn

from bench.nn.early_exit import capture

TIMM_STEM_WIDTH = 64
STEM_KERNEL, STEM_STRIDE, STEM_PADDING = 7, 2, 3


def resnet_trunk(width: int, layers: tuple[int, ...]) -> ResNet:
    """Bottleneck ResNet whose stem has `width` channels and stage i has width * 2^i planes.

    width 64 with layers (3, 4, 6, 3) is exactly timm's resnet50; width 128 is SwAV's RN50w2.
    """
    channels = tuple(width * 2**i for i in range(len(layers)))
    # timm annotates `block` as Union[BasicBlock, Bottleneck] (instances) but calls it: it takes the class.
    model = ResNet(Bottleneck, layers, channels=channels, num_classes=0, global_pool="")  # type: ignore[arg-type]
    if width != TIMM_STEM_WIDTH:
        # setattr: timm types conv1 by its deep-stem branch (nn.Sequential); the plain stem is one conv
        setattr(model, "conv1", nn.Conv2d(3, width, STEM_KERNEL, STEM_STRIDE, STEM_PADDING, bias=False))
        model.bn1 = nn.BatchNorm2d(width)
        stages, _ = make_blocks((Bottleneck,) * len(layers), channels, layers, inplanes=width,
                                norm_layer=nn.BatchNorm2d, act_layer=nn.ReLU)
        for name, stage in stages:
            setattr(model, name, stage)
        model.init_weights(zero_init_last=True)
    return model


def stages(trunk: ResNet) -> list[nn.Sequential]:
    return [cast(nn.Sequential, m) for name, m in trunk.named_children() if name.startswith("layer")]


def read_blocks(trunk: ResNet, every: int) -> list[nn.Module]:
    """Blocks 0, every, 2*every, ... of each stage: their inputs are the pixel features."""
    return [stage[i] for stage in stages(trunk) for i in range(0, len(stage), every)]


@torch.no_grad()
def block_inputs(trunk: ResNet, x: torch.Tensor, every: int) -> list[torch.Tensor]:
    """The inputs of `read_blocks` for a batch x (already normalised), stopping the trunk early."""
    return capture(read_blocks(trunk, every), lambda: trunk(x), inputs=True)


class SwAVNet(nn.Module):
    """Trunk -> global average pool -> MLP head -> L2-normalised embedding -> prototype scores."""

    steps: torch.Tensor  # buffer: training steps taken

    def __init__(self, trunk: ResNet, hidden: int, out_dim: int, prototypes: int) -> None:
        super().__init__()
        self.trunk = trunk
        self.head = nn.Sequential(nn.Linear(trunk.num_features, hidden), nn.BatchNorm1d(hidden),
                                  nn.ReLU(inplace=True), nn.Linear(hidden, out_dim))
        self.prototypes = nn.Linear(out_dim, prototypes, bias=False)
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))  # training steps taken

    def embed(self, crops: list[torch.Tensor]) -> torch.Tensor:
        """Each resolution group goes through the trunk as one batch (its own BatchNorm statistics)."""
        pooled = torch.cat([self.trunk(c).mean((2, 3)) for c in crops])
        return F.normalize(self.head(pooled), dim=1)

    @torch.no_grad()
    def normalise_prototypes(self) -> None:
        """SwAV keeps the prototypes on the unit sphere, projected before every step."""
        self.prototypes.weight.copy_(F.normalize(self.prototypes.weight, dim=1))

    def forward(self, crops: list[torch.Tensor], frozen: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Embeddings and prototype scores of every crop (the training step, through DDP's forward)."""
        embeddings = self.embed(crops)
        return embeddings, self.scores(embeddings, frozen)

    def scores(self, embeddings: torch.Tensor, frozen: bool = False) -> torch.Tensor:
        weight = self.prototypes.weight.detach() if frozen else self.prototypes.weight
        return embeddings @ weight.t()
