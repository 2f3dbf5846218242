"""Swin UNETR (MONAI SwinUNETR, 2D), a supervised baseline of Table 1.

MONAI 1.5+ takes no `img_size`: any input whose sides are multiples of 32 works (five 2x
reductions), so this plugin insists that its training crop / sliding window is one.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from bench.errors import FieldError
from bench.limits import POSITIVE, UNIT, Rule
from bench.registry import register
from bench.supervised import PAPER_PROTOCOL, PAPER_RECIPE, SMALL_RECIPE, SupervisedConfig, SupervisedMethod

SIDE_MULTIPLE = 32


@dataclass(frozen=True)
class SwinUNETRConfig(SupervisedConfig):
    feature_size: int = 24
    depths: tuple[int, int, int, int] = (2, 2, 2, 2)        # Swin blocks of each of the four stages
    num_heads: tuple[int, int, int, int] = (3, 6, 12, 24)
    window_size: int = 7
    drop_path: float = 0.0

    LIMITS: ClassVar[dict[str, Rule]] = {"feature_size": POSITIVE, "depths": POSITIVE, "num_heads": POSITIVE,
                                         "window_size": POSITIVE, "drop_path": UNIT}

    def __post_init__(self) -> None:
        super().__post_init__()
        side = self.input_size or self.crop
        if side % SIDE_MULTIPLE:
            key = "input_size" if self.input_size else "crop"
            raise FieldError(key, f"must be a multiple of {SIDE_MULTIPLE}, got {side}")
        if self.feature_size % 12:
            raise FieldError("feature_size", f"must be a multiple of 12, got {self.feature_size}")


@register("swin_unetr", "supervised")
class SwinUNETRBaseline(SupervisedMethod):
    """MONAI 2D Swin UNETR (Swin transformer encoder, CNN decoder), trained on the labelled images only."""

    Config = SwinUNETRConfig
    presets = {
        "tiny": SwinUNETRConfig(max_side=192, crop=64, batch=4, max_epochs=4, steps_per_epoch=8, patience=3,
                                feature_size=12, depths=(1, 1, 1, 1), num_heads=(1, 2, 4, 4), window_size=4),
        "small": SwinUNETRConfig(**SMALL_RECIPE, feature_size=12, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8), window_size=4),
        "paper": SwinUNETRConfig(**PAPER_RECIPE, protocol=PAPER_PROTOCOL),
    }

    def build_model(self, num_classes: int = 2) -> nn.Module:
        from monai.networks.nets import SwinUNETR  # imported here: monai takes seconds to import

        c = self.cfg
        return SwinUNETR(in_channels=3, out_channels=self.out_channels(num_classes), spatial_dims=2,
                         feature_size=c.feature_size, depths=c.depths, num_heads=c.num_heads,
                         window_size=c.window_size, dropout_path_rate=c.drop_path)

    @classmethod
    def param_count(cls) -> int:
        """MONAI's constructor calls `.item()` (drop-path rates), which the meta device cannot do,
        so the paper model (6.3 M parameters) is built on the CPU instead."""
        with torch.device("cpu"):
            model = cls(cls.presets["paper"]).build_model()
        return sum(p.numel() for p in model.parameters())
