"""UCTransNet's architecture settings, apart from the model so that its parts can import them."""
from __future__ import annotations

from dataclasses import dataclass

from bench.errors import ConfigError

_WHERE = "UCTransNetConfig"


@dataclass(frozen=True)
class UCTransNetConfig:
    """Architecture of UCTransNet; defaults are the paper's / official repository's."""

    n_channels: int = 3
    n_classes: int = 1
    img_size: int = 224
    base_channel: int = 64
    kv_size: int = 960
    num_heads: int = 4
    num_layers: int = 4
    expand_ratio: int = 4
    patch_sizes: tuple[int, int, int, int] = (16, 8, 4, 2)
    embeddings_dropout: float = 0.1
    attention_dropout: float = 0.1
    mlp_dropout: float = 0.0

    def __post_init__(self) -> None:
        for key in ("n_channels", "n_classes", "img_size", "base_channel", "num_heads", "num_layers", "expand_ratio"):
            if getattr(self, key) < 1:
                raise ConfigError(_WHERE, key, f"must be >= 1, got {getattr(self, key)}")
        if len(self.patch_sizes) != 4:
            raise ConfigError(_WHERE, "patch_sizes", f"needs one patch size per skip (4), got {self.patch_sizes}")
        if self.kv_size != sum(self.skip_channels):
            raise ConfigError(
                _WHERE, "kv_size", f"must equal the sum of the skip channels {sum(self.skip_channels)}, got {self.kv_size}"
            )
        if self.img_size % 16:
            raise ConfigError(_WHERE, "img_size", f"must be divisible by 16 (four 2x poolings), got {self.img_size}")
        for i, patch in enumerate(self.patch_sizes):
            if patch < 1 or (self.img_size >> i) % patch:
                raise ConfigError(
                    _WHERE, "patch_sizes",
                    f"patch {patch} does not tile the skip {i + 1} map of side {self.img_size >> i}",
                )
        if len({(self.img_size >> i) // p for i, p in enumerate(self.patch_sizes)}) != 1:
            raise ConfigError(_WHERE, "patch_sizes", "every skip must give the same number of tokens")

    @property
    def skip_channels(self) -> tuple[int, int, int, int]:
        """Channels of the four skip connections (64, 128, 256, 512 at base 64)."""
        b = self.base_channel
        return (b, 2 * b, 4 * b, 8 * b)
