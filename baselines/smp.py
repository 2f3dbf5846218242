"""segmentation-models-pytorch networks as a supervised baseline (architecture and encoder are config)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from bench.errors import FieldError
from bench.limits import Rule, Text
from bench.nn.smp_models import Architecture, build_smp, encoder_problem, file_problem
from bench.registry import register
from bench.supervised import PAPER_PROTOCOL, PAPER_RECIPE, SMALL_RECIPE, SupervisedConfig, SupervisedMethod

WHERE = "[params.smp]"


@dataclass(frozen=True)
class SMPConfig(SupervisedConfig):
    arch: Architecture = "Unet"            # Unet | UnetPlusPlus | DeepLabV3 | DeepLabV3Plus | FPN | ...
    encoder: str = "resnet34"              # resnet34 | resnet101 | efficientnet-b0 | ...
    encoder_weights: str | None = None     # None: random init, nothing downloads (smp's name, e.g. "imagenet", downloads)
    encoder_checkpoint: str | None = None  # a local encoder state dict instead (e.g. torchvision ImageNet weights)

    # The encoder's name is checked before a run (smp imports slowly), the architecture always.
    LIMITS: ClassVar[dict[str, Rule]] = {
        "encoder": Text("an smp encoder", before_run=encoder_problem),
        "encoder_weights": Text("smp's name of published encoder weights (they download)"),
        "encoder_checkpoint": Text("a local encoder state dict", before_run=file_problem),
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.encoder_weights is not None and self.encoder_checkpoint is not None:
            raise FieldError("encoder_checkpoint", "set either encoder_weights or encoder_checkpoint, not both")


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
