"""Configuration of the guided-diffusion UNet, and the decoder geometry derived from it.

The dataclass is the single source of truth for the architecture: `GDUNet` builds from it and the
feature extractor computes feature dimensions from it without building a 300M-parameter model.
Field names and defaults follow guided-diffusion's `UNetModel`, so a published checkpoint's
argument dict (`from_guided_diffusion_args`) maps onto it one to one.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from bench.errors import ConfigError

_WHERE = "GDUNetConfig"

# guided-diffusion's channel_mult when the argument is left empty, keyed by image size.
DEFAULT_CHANNEL_MULT: dict[int, tuple[float, ...]] = {
    512: (0.5, 1, 1, 2, 2, 4, 4),
    256: (1, 1, 2, 2, 4, 4),
    128: (1, 1, 2, 3, 4),
    64: (1, 2, 3, 4),
}

# Defaults of guided-diffusion's `model_and_diffusion_defaults` for the model arguments.
GUIDED_DIFFUSION_DEFAULTS: dict[str, Any] = {
    "image_size": 64,
    "num_channels": 128,
    "num_res_blocks": 2,
    "num_heads": 4,
    "num_heads_upsample": -1,
    "num_head_channels": -1,
    "attention_resolutions": "16,8",
    "channel_mult": "",
    "dropout": 0.0,
    "class_cond": False,
    "use_checkpoint": False,
    "use_scale_shift_norm": True,
    "resblock_updown": False,
    "use_fp16": False,
    "use_new_attention_order": False,
    "learn_sigma": False,
}

# Diffusion-process arguments that share the dict with the model arguments but do not shape it.
_DIFFUSION_ONLY_ARGS = frozenset({
    "diffusion_steps", "noise_schedule", "timestep_respacing", "use_kl", "predict_xstart",
    "rescale_timesteps", "rescale_learned_sigmas",
})

# guided-diffusion's class-conditional ImageNet models.
IMAGENET_NUM_CLASSES = 1000


@dataclass(frozen=True)
class GDUNetConfig:
    """Arguments of guided-diffusion's UNetModel.

    `attention_resolutions` holds downsample rates (ds = image_size // resolution), as UNetModel
    takes them; `from_guided_diffusion_args` converts the "32,16,8" resolution strings of the
    training scripts. `out_channels` None means in_channels, doubled when `learn_sigma` (the model
    then also predicts the variance interpolation). `use_fp16` only changes the dtype of the convs.
    """

    image_size: int
    model_channels: int
    num_res_blocks: int
    attention_resolutions: tuple[int, ...]
    in_channels: int = 3
    out_channels: int | None = None
    learn_sigma: bool = False
    dropout: float = 0.0
    channel_mult: tuple[float, ...] = (1, 2, 4, 8)
    conv_resample: bool = True
    dims: int = 2
    num_classes: int | None = None
    use_fp16: bool = False
    num_heads: int = 1
    num_head_channels: int = -1
    num_heads_upsample: int = -1
    use_scale_shift_norm: bool = False
    resblock_updown: bool = False
    use_new_attention_order: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "attention_resolutions", tuple(self.attention_resolutions))
        object.__setattr__(self, "channel_mult", tuple(self.channel_mult))
        if self.dims not in (1, 2, 3):
            raise ConfigError(_WHERE, "dims", f"must be 1, 2 or 3, got {self.dims}")
        if self.model_channels <= 0 or self.num_res_blocks < 0 or not self.channel_mult:
            raise ConfigError(_WHERE, "model_channels", "model_channels must be > 0, "
                              "num_res_blocks >= 0 and channel_mult non-empty")
        if self.learn_sigma and self.out_channels is not None and self.out_channels % 2:
            raise ConfigError(_WHERE, "out_channels",
                              f"learn_sigma needs an even channel count, got {self.out_channels}")
        for width in self.level_channels:
            if width % 32:
                raise ConfigError(_WHERE, "channel_mult",
                                  f"level width {width} is not divisible by 32 GroupNorm groups")
            if self.num_head_channels != -1 and width % self.num_head_channels:
                raise ConfigError(_WHERE, "num_head_channels",
                                  f"{self.num_head_channels} does not divide width {width}")

    @property
    def resolved_out_channels(self) -> int:
        """Channels of the model output: image channels, doubled for the learned variance."""
        if self.out_channels is not None:
            return self.out_channels
        return self.in_channels * (2 if self.learn_sigma else 1)

    @property
    def level_channels(self) -> list[int]:
        """Width of each resolution level, as guided-diffusion rounds it."""
        return [int(mult * self.model_channels) for mult in self.channel_mult]

    @property
    def resolved_num_heads_upsample(self) -> int:
        """Heads of decoder attention: -1 means the encoder's `num_heads`."""
        return self.num_heads if self.num_heads_upsample == -1 else self.num_heads_upsample

    @classmethod
    def from_guided_diffusion_args(cls, args: Mapping[str, Any], *, strict: bool = True,
                                   in_channels: int = 3) -> GDUNetConfig:
        """Build from a guided-diffusion `create_model` argument dict (e.g. a checkpoint's config).

        Missing keys take guided-diffusion's defaults; diffusion-process keys are ignored; any
        other unknown key raises ConfigError unless `strict` is False (so a typo cannot silently
        build a different network).
        """
        unknown = sorted(set(args) - set(GUIDED_DIFFUSION_DEFAULTS) - _DIFFUSION_ONLY_ARGS)
        if unknown and strict:
            raise ConfigError(_WHERE, unknown[0], f"unknown guided-diffusion argument(s): {unknown}")
        a = {**GUIDED_DIFFUSION_DEFAULTS, **{k: v for k, v in args.items() if k not in unknown}}
        image_size = int(a["image_size"])
        return cls(
            image_size=image_size,
            in_channels=in_channels,
            model_channels=int(a["num_channels"]),
            learn_sigma=bool(a["learn_sigma"]),
            num_res_blocks=int(a["num_res_blocks"]),
            attention_resolutions=attention_ds(image_size, a["attention_resolutions"]),
            dropout=float(a["dropout"]),
            channel_mult=_channel_mult(image_size, a["channel_mult"]),
            num_classes=IMAGENET_NUM_CLASSES if a["class_cond"] else None,
            use_fp16=bool(a["use_fp16"]),
            num_heads=int(a["num_heads"]),
            num_head_channels=int(a["num_head_channels"]),
            num_heads_upsample=int(a["num_heads_upsample"]),
            use_scale_shift_norm=bool(a["use_scale_shift_norm"]),
            resblock_updown=bool(a["resblock_updown"]),
            use_new_attention_order=bool(a["use_new_attention_order"]),
        )


def attention_ds(image_size: int, resolutions: str | int | tuple[int, ...] | list[int]
                 ) -> tuple[int, ...]:
    """Convert attention resolutions ("32,16,8" at 256 px) into downsample rates (8, 16, 32)."""
    if isinstance(resolutions, str):
        parts = [p for p in resolutions.split(",") if p.strip()]
        values = [int(p) for p in parts]
    elif isinstance(resolutions, int):
        values = [resolutions]
    else:
        values = [int(r) for r in resolutions]
    for res in values:
        if res <= 0 or image_size % res:
            raise ConfigError(_WHERE, "attention_resolutions",
                              f"resolution {res} does not divide image_size {image_size}")
    return tuple(sorted(image_size // res for res in values))


def _channel_mult(image_size: int, spec: str | tuple[float, ...] | list[float]) -> tuple[float, ...]:
    """guided-diffusion's channel_mult: explicit "1,1,2,2,4,4", or the image-size default."""
    if isinstance(spec, str) and not spec.strip():
        if image_size not in DEFAULT_CHANNEL_MULT:
            raise ConfigError(_WHERE, "channel_mult",
                              f"no default for image_size {image_size}; give it explicitly")
        return DEFAULT_CHANNEL_MULT[image_size]
    if isinstance(spec, str):
        return tuple(float(p) if "." in p else int(p) for p in spec.split(",") if p.strip())
    return tuple(spec)


def decoder_block_channels(cfg: GDUNetConfig) -> list[int]:
    """Channels of the output of each `output_blocks[i]` (what a forward hook there sees)."""
    out: list[int] = []
    for width in reversed(cfg.level_channels):
        out.extend([width] * (cfg.num_res_blocks + 1))
    return out


def decoder_block_strides(cfg: GDUNetConfig) -> list[int]:
    """Downsample factor (input size / feature size) of the output of each `output_blocks[i]`.

    The last block of every level but the first upsamples, so its output is at the next level's
    stride.
    """
    strides: list[int] = []
    levels = len(cfg.channel_mult)
    for level in reversed(range(levels)):
        ds = 2 ** level
        strides.extend([ds] * cfg.num_res_blocks)
        strides.append(ds // 2 if level else ds)
    return strides
