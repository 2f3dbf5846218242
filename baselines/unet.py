"""UNet, the plain supervised baseline of Table 1: MONAI's residual UNet, or the classic UNet.

The paper's "UNet" is the classic one (bench.nn.classic_unet, widths 64..1024: the `paper`
preset); MONAI's residual UNet stays the network of the smaller presets, whose records predate
the choice (`arch` is left out of their run identity while it holds "monai").
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from torch import nn

from bench.errors import FieldError
from bench.limits import NON_NEGATIVE, POSITIVE, Rule, positive
from bench.nn.classic_unet import WIDTHS, ClassicUNet
from bench.registry import register
from bench.supervised import PAPER_PROTOCOL, PAPER_RECIPE, SMALL_RECIPE, SupervisedConfig, SupervisedMethod


@dataclass(frozen=True)
class UNetConfig(SupervisedConfig):
    arch: Literal["monai", "classic"] = "monai"  # classic: max-pool + transposed convs (channels only)
    channels: tuple[int, ...] = (16, 32, 64, 128, 256)  # widths from the top level down
    strides: tuple[int, ...] = (2, 2, 2, 2)  # monai only (classic always pools by 2)
    num_res_units: int = 2                   # monai only

    LEGACY: ClassVar[dict[str, Any]] = {"arch": "monai"}

    LIMITS: ClassVar[dict[str, Rule]] = {"channels": positive(min_len=2), "strides": POSITIVE, "num_res_units": NON_NEGATIVE}

    def __post_init__(self) -> None:
        super().__post_init__()
        if len(self.strides) != len(self.channels) - 1:
            raise FieldError("strides", f"needs {len(self.channels) - 1} values, one per level below the first of "
                             f"the {len(self.channels)} channels, got {len(self.strides)}")


@register("unet", "supervised")
class UNetBaseline(SupervisedMethod):
    """UNet (MONAI 2D residual, or the classic max-pool / transposed-conv one), trained on the labelled images only."""

    Config = UNetConfig
    presets = {
        "tiny": UNetConfig(max_side=192, crop=64, batch=8, max_epochs=6, steps_per_epoch=10, patience=3,
                           channels=(8, 16, 32, 64), strides=(2, 2, 2), num_res_units=1),
        "small": UNetConfig(**SMALL_RECIPE, channels=(16, 32, 64, 128), strides=(2, 2, 2), num_res_units=2),
        "paper": UNetConfig(**PAPER_RECIPE, protocol=PAPER_PROTOCOL, arch="classic", channels=WIDTHS),
    }

    def build_model(self, num_classes: int = 2) -> nn.Module:
        c = self.cfg
        if c.arch == "classic":
            return ClassicUNet(3, self.out_channels(num_classes), tuple(c.channels))
        from monai.networks.nets import UNet  # imported here: monai takes seconds to import

        return UNet(spatial_dims=2, in_channels=3, out_channels=self.out_channels(num_classes),
                    channels=c.channels, strides=c.strides, num_res_units=c.num_res_units)
