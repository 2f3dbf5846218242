"""segmentation-models-pytorch networks as a supervised baseline (architecture and encoder are config)."""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from bench.nn.smp_models import build_smp, check_arch
from bench.registry import register
from bench.supervised import PAPER_PROTOCOL, PAPER_RECIPE, SMALL_RECIPE, SupervisedConfig, SupervisedMethod

WHERE = "[params.smp]"


@dataclass(frozen=True)
class SMPConfig(SupervisedConfig):
    arch: str = "Unet"                     # Unet | UnetPlusPlus | DeepLabV3 | DeepLabV3Plus | FPN | ...
    encoder: str = "resnet34"              # resnet34 | resnet101 | efficientnet-b0 | ...
    encoder_weights: str | None = None     # None: random init, nothing downloads (smp's name, e.g. "imagenet", downloads)
    encoder_checkpoint: str | None = None  # a local encoder state dict instead (e.g. torchvision ImageNet weights)

    def __post_init__(self) -> None:
        check_arch(WHERE, self.arch)  # the encoder is checked when the model is built (smp imports slowly)


@register("smp", "supervised")
class SMPBaseline(SupervisedMethod):
    """A segmentation-models-pytorch network (Unet/ResNet-34 by default), trained on the labelled images only."""

    Config = SMPConfig
    presets = {
        "tiny": SMPConfig(max_side=192, crop=64, batch=8, max_epochs=6, steps_per_epoch=10, patience=3,
                          encoder="resnet18"),
        "small": SMPConfig(**SMALL_RECIPE),
        "paper": SMPConfig(**PAPER_RECIPE, protocol=PAPER_PROTOCOL),
    }

    def build_model(self, num_classes: int = 2) -> nn.Module:
        c = self.cfg
        return build_smp(c.arch, c.encoder, self.out_channels(num_classes), c.encoder_weights,
                         c.encoder_checkpoint, WHERE)
