"""UNet++ (MONAI BasicUNetPlusPlus), a supervised baseline of Table 1."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from torch import Tensor, nn

from bench.limits import POSITIVE, Rule
from bench.registry import register
from bench.supervised import PAPER_PROTOCOL, PAPER_RECIPE, SMALL_RECIPE, SupervisedConfig, SupervisedMethod


@dataclass(frozen=True)
class UNetPlusPlusConfig(SupervisedConfig):
    # Six widths, MONAI's convention: the five encoder levels, then the last decoder stage.
    features: tuple[int, int, int, int, int, int] = (32, 32, 64, 128, 256, 32)
    upsample: Literal["deconv", "pixelshuffle", "nontrainable"] = "deconv"

    LIMITS: ClassVar[dict[str, Rule]] = {"features": POSITIVE}


class LastOutput(nn.Module):
    """BasicUNetPlusPlus returns a list of heads (one without deep supervision); the trainer wants
    the full-depth head's logits as one tensor."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)[-1]


@register("unetpp", "supervised")
class UNetPlusPlusBaseline(SupervisedMethod):
    """MONAI 2D UNet++ (nested dense skips), trained on the labelled images only."""

    Config = UNetPlusPlusConfig
    presets = {
        "tiny": UNetPlusPlusConfig(max_side=192, crop=64, batch=8, max_epochs=4, steps_per_epoch=8, patience=3,
                                   features=(4, 4, 8, 16, 32, 4)),
        "small": UNetPlusPlusConfig(**SMALL_RECIPE, features=(16, 16, 32, 64, 128, 16)),
        "paper": UNetPlusPlusConfig(**PAPER_RECIPE, protocol=PAPER_PROTOCOL),
    }

    def build_model(self, num_classes: int = 2) -> nn.Module:
        from monai.networks.nets import BasicUNetPlusPlus  # imported here: monai takes seconds to import

        c = self.cfg
        return LastOutput(BasicUNetPlusPlus(spatial_dims=2, in_channels=3, out_channels=self.out_channels(num_classes),
                                            features=c.features, upsample=c.upsample))
