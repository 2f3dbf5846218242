"""UCTransNet (Wang et al., AAAI 2022) with its published recipe (REFERENCE §8).

The network is the faithful port in bench.nn.uctransnet; its position embeddings fix the input
size. With `input_size` set (the published recipe: 224) whole images are resized to it and
predictions mapped back; with none (protocol "official", as the MDM paper's script ran it) the
network is built at the training crop, trained on random crops and predicted by sliding windows.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from bench.errors import ConfigError, FieldError
from bench.limits import POSITIVE, Rule
from bench.nn.uctransnet import UCTransNet, UCTransNetConfig as NetConfig
from bench.registry import register
from bench.supervised import PAPER_PROTOCOL, Augment, EpochMode, LossName, Scheduler, SupervisedConfig, SupervisedMethod


@dataclass(frozen=True)
class UCTransNetConfig(SupervisedConfig):
    """The recipe's defaults are the paper's; KV size is derived (the sum of the skip widths)."""

    input_size: int | None = 224
    batch: int = 4
    scheduler: Scheduler = "cosine_warm_restarts"
    restart_period: int = 10
    min_lr: float = 1e-4
    loss: LossName = "bce_dice"
    augment: Augment = "rot_flip_or_rotate"
    rotate_degrees: float = 20.0
    max_epochs: int = 2000
    epoch_mode: EpochMode = "pass"
    patience: int = 50
    base_channel: int = 64
    num_heads: int = 4
    num_layers: int = 4
    expand_ratio: int = 4
    patch_sizes: tuple[int, int, int, int] = (16, 8, 4, 2)

    LIMITS: ClassVar[dict[str, Rule]] = {"base_channel": POSITIVE, "num_heads": POSITIVE, "num_layers": POSITIVE,
                                         "expand_ratio": POSITIVE, "patch_sizes": POSITIVE}

    def __post_init__(self) -> None:
        super().__post_init__()
        try:
            self.network(1)  # the port checks sizes, patches and widths: fail when the config is resolved
        except ConfigError as exc:
            raise FieldError({"img_size": "input_size"}.get(exc.key, exc.key), exc.message) from None

    def network(self, n_classes: int) -> NetConfig:
        """The port's config: built at `input_size`, else (whole images not resized) at the crop."""
        return NetConfig(
            n_channels=3, n_classes=n_classes, img_size=self.input_size or self.crop, base_channel=self.base_channel,
            kv_size=15 * self.base_channel, num_heads=self.num_heads, num_layers=self.num_layers,
            expand_ratio=self.expand_ratio, patch_sizes=self.patch_sizes,
        )


@register("uctransnet", "supervised")
class UCTransNetBaseline(SupervisedMethod):
    """UCTransNet: U-Net whose skips pass a channel transformer; built at input_size (224), else at the crop."""

    Config = UCTransNetConfig
    presets = {
        # A net this small sits ~100 steps on an all-foreground plateau of this loss at lr 1e-3.
        "tiny": UCTransNetConfig(input_size=64, lr=1e-2, min_lr=1e-3, max_epochs=12, patience=8, base_channel=8,
                                 num_heads=2, num_layers=1, expand_ratio=2),
        "small": UCTransNetConfig(max_side=256, input_size=128, max_epochs=80, patience=15, base_channel=16),
        "paper": UCTransNetConfig(protocol=PAPER_PROTOCOL),  # official: CE on 256 crops, built at 256
    }

    def build_model(self, num_classes: int = 2) -> nn.Module:
        return UCTransNet(self.cfg.network(self.out_channels(num_classes)))
