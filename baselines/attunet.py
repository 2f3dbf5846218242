"""Attention U-Net (MONAI AttentionUnet), a supervised baseline of Table 1."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from bench.errors import FieldError
from bench.limits import POSITIVE, UNIT, Rule, positive
from bench.registry import register
from bench.supervised import PAPER_PROTOCOL, PAPER_RECIPE, SMALL_RECIPE, SupervisedConfig, SupervisedMethod


@dataclass(frozen=True)
class AttentionUNetConfig(SupervisedConfig):
    channels: tuple[int, ...] = (16, 32, 64, 128, 256)
    strides: tuple[int, ...] = (2, 2, 2, 2)
    dropout: float = 0.0

    LIMITS: ClassVar[dict[str, Rule]] = {"channels": positive(min_len=2), "strides": POSITIVE, "dropout": UNIT}

    def __post_init__(self) -> None:
        super().__post_init__()
        # one stride per level below the first; the official config passes one more, which MONAI ignores
        if len(self.strides) not in (len(self.channels) - 1, len(self.channels)):
            raise FieldError("strides", f"needs {len(self.channels) - 1} values, one per level below the first of "
                             f"the {len(self.channels)} channels, got {len(self.strides)}")


@register("attunet", "supervised")
class AttentionUNetBaseline(SupervisedMethod):
    """MONAI 2D Attention U-Net (attention-gated skips), trained on the labelled images only."""

    Config = AttentionUNetConfig
    presets = {
        "tiny": AttentionUNetConfig(max_side=192, crop=64, batch=8, max_epochs=4, steps_per_epoch=8, patience=3,
                                    channels=(8, 16, 32, 64), strides=(2, 2, 2)),
        "small": AttentionUNetConfig(**SMALL_RECIPE, channels=(16, 32, 64, 128), strides=(2, 2, 2)),
        # The official script's network (31,740,402 parameters). It passes five strides for five
        # widths; MONAI reads the first len(channels) - 1 of them, so the fifth changes nothing.
        "paper": AttentionUNetConfig(**PAPER_RECIPE, protocol=PAPER_PROTOCOL, channels=(64, 128, 256, 512, 1024),
                                     strides=(2, 2, 2, 2, 2)),
    }

    def build_model(self, num_classes: int = 2) -> nn.Module:
        from monai.networks.nets import AttentionUnet  # imported here: monai takes seconds to import

        c = self.cfg
        return AttentionUnet(spatial_dims=2, in_channels=3, out_channels=self.out_channels(num_classes),
                             channels=c.channels, strides=c.strides, dropout=c.dropout)
