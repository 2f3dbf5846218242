"""segmentation-models-pytorch networks, built without any download.

smp builds an architecture (Unet, UnetPlusPlus, DeepLabV3, DeepLabV3Plus, FPN, ...) around an
encoder (resnet34, resnet101, efficientnet-b0, ...). With `encoder_weights=None` (bench's default)
smp fetches nothing; pre-trained encoder weights come only from a local file the user names
(`encoder_checkpoint`: a state dict of the encoder, e.g. torchvision's resnet101 ImageNet
weights; a classifier's `fc.*` keys are ignored). Inputs in [0, 1] are normalised with the
ImageNet statistics inside the model, as torchvision's and smp's encoders expect.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal, get_args

import torch
from torch import Tensor, nn

from bench.errors import ConfigError, DataError
from bench.nn.checkpoint import load_state_dict_strict, unwrap_state_dict

Architecture = Literal["Unet", "UnetPlusPlus", "MAnet", "Linknet", "FPN", "PSPNet", "PAN", "DeepLabV3",
                       "DeepLabV3Plus", "UPerNet", "Segformer"]
ARCHITECTURES: tuple[str, ...] = get_args(Architecture)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLASSIFIER_PREFIXES = ("fc.", "classifier.", "_fc.")


class Normalized(nn.Module):
    """(x - mean) / std in front of a network (the statistics are buffers, not parameters)."""

    mean: Tensor  # buffers
    std: Tensor

    def __init__(self, net: nn.Module, mean: tuple[float, ...] = IMAGENET_MEAN,
                 std: tuple[float, ...] = IMAGENET_STD) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.net((x - self.mean.to(x.dtype)) / self.std.to(x.dtype))


def check_arch(where: str, arch: str) -> None:
    """One clear line for an architecture smp does not have (cheap: smp is not imported)."""
    if arch not in ARCHITECTURES:
        raise ConfigError(where, "arch", f"unknown architecture {arch!r}; expected one of {', '.join(ARCHITECTURES)}")


def check_encoder(where: str, encoder: str) -> None:
    """One clear line for an encoder smp does not have."""
    problem = encoder_problem(encoder)
    if problem is not None:
        raise ConfigError(where, "encoder", problem)


def encoder_problem(encoder: str) -> str | None:
    """Why smp cannot build `encoder`, or None (imports smp: seconds, so only before a run)."""
    import segmentation_models_pytorch as smp

    if encoder not in smp.encoders.get_encoder_names():
        return f"unknown encoder {encoder!r} (smp.encoders.get_encoder_names() lists them)"
    return None


def file_problem(path: str) -> str | None:
    """Why `path` is not a file to load here, or None."""
    return None if Path(path).is_file() else f"file {path} does not exist"


def build_smp(arch: str, encoder: str, classes: int, encoder_weights: str | None = None,
              encoder_checkpoint: str | None = None, where: str = "[params]") -> nn.Module:
    """An smp network with `classes` output channels (logits, input in [0, 1])."""
    import segmentation_models_pytorch as smp  # imported here: it pulls in timm

    check_arch(where, arch)
    check_encoder(where, encoder)
    net = getattr(smp, arch)(encoder_name=encoder, encoder_weights=encoder_weights, classes=classes)
    if encoder_checkpoint:
        load_encoder(net.encoder, Path(encoder_checkpoint), f"{encoder_checkpoint} ({where}.encoder_checkpoint)")
    return Normalized(net)


def load_encoder(encoder: nn.Module, path: Path, where: str) -> None:
    """Load a local encoder state dict strictly (a classifier head's keys are dropped)."""
    if str(encoder.parameters().__next__().device) == "meta":
        return  # counting parameters: nothing to load
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise DataError(where, "no such file") from None
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's to fix
        raise DataError(where, f"cannot read it as a torch state dict ({type(exc).__name__})") from None
    state = {k: v for k, v in unwrap_state_dict(raw, where).items() if not k.startswith(CLASSIFIER_PREFIXES)}
    load_state_dict_strict(encoder, state, source=where)
