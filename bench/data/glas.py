"""GlaS (Warwick QU release) loader.

Layout, one folder: `train_N` (N = 1..85), `testA_N` (1..60) and `testB_N` (1..20) images, each
with a `<stem>_anno` 8-bit instance map (0 = background, 1..K = glands). Files may be .bmp or .png
in any mix (the release ships BMP; converted copies are PNG). Other files (Grade.csv) are ignored.
The train split is train_*, the test split testA_* then testB_*, each in numeric order.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.data.io import check_same_size, load_parallel, make_sample, read_label_image, read_rgb, require_folder
from bench.data.types import Sample
from bench.errors import DataError


@dataclass(frozen=True)
class GlasLayout:
    """File naming of the release; one source of truth for the loader and its error messages."""

    split_prefixes: tuple[tuple[str, tuple[str, ...]], ...] = (
        ("train", ("train",)),
        ("test", ("testA", "testB")),
    )
    extensions: tuple[str, ...] = (".bmp", ".png")
    label_suffix: str = "_anno"

    def prefixes(self, split: str) -> tuple[str, ...]:
        for name, prefixes in self.split_prefixes:
            if name == split:
                return prefixes
        raise ValueError(f"unknown split {split!r}; expected one of {[n for n, _ in self.split_prefixes]}")


GLAS_LAYOUT = GlasLayout()

_FILE_RE = re.compile(r"^(train|testA|testB)_(\d+)(_anno)?(\.[A-Za-z]+)$")

# (prefix, N, is_label) -> path
_Index = dict[tuple[str, int, bool], Path]


def _index_folder(root: Path, layout: GlasLayout) -> _Index:
    """Map every release-named file to its key; two files for one key (x.bmp and x.png) is ambiguous."""
    index: _Index = {}
    for path in sorted(root.iterdir()):
        match = _FILE_RE.match(path.name)
        if not match or match.group(4).lower() not in layout.extensions or not path.is_file():
            continue
        key = (match.group(1), int(match.group(2)), match.group(3) is not None)
        if key in index:
            raise DataError(path, f"both {index[key].name} and {path.name} exist; keep only one")
        index[key] = path
    return index


def _pattern_text(prefixes: tuple[str, ...], layout: GlasLayout) -> str:
    exts = "|".join(e.lstrip(".") for e in layout.extensions)
    return ", ".join(f"{p}_N.{exts} with {p}_N{layout.label_suffix}.{exts}" for p in prefixes)


def _load_one(image_path: Path, label_path: Path) -> Sample:
    image = read_rgb(image_path)
    anno = read_label_image(label_path)
    check_same_size(label_path, anno.shape, image_path, image.shape)
    return make_sample(image_path.stem, image, (anno > 0).astype(np.int64), anno)


def load_glas(root: Path, split: str, layout: GlasLayout = GLAS_LAYOUT) -> list[Sample]:
    """All samples of one split, in release order (prefix, then N numerically)."""
    prefixes = layout.prefixes(split)
    require_folder(root, "GlaS")
    index = _index_folder(root, layout)
    keys = sorted((k for k in index if not k[2] and k[0] in prefixes),
                  key=lambda k: (prefixes.index(k[0]), k[1]))
    for prefix, number, is_label in index:
        if is_label and prefix in prefixes and (prefix, number, False) not in index:
            raise DataError(index[(prefix, number, True)], f"annotation has no image {prefix}_{number} beside it")
    if not keys:
        raise DataError(root, f"no GlaS {split} images found; expected {_pattern_text(prefixes, layout)}")
    pairs = []
    for prefix, number, _ in keys:
        image_path = index[(prefix, number, False)]
        label_path = index.get((prefix, number, True))
        if label_path is None:
            wanted = " or ".join(f"{image_path.stem}{layout.label_suffix}{e}" for e in layout.extensions)
            raise DataError(image_path, f"label file missing: expected {wanted} beside it")
        pairs.append((image_path, label_path))
    return load_parallel(_load_one, pairs)
